"""Reading the database's invalidation log: the channel that cannot lose a change.

Every instance reads new records by increasing id every `invalidation_poll_interval`
seconds and applies them: the in-process entry is dropped, the record's id becomes the key's
version (older Redis entries are refused from then on), and the Redis entry is tombstoned.
Redis pub/sub usually gets there first; this is what holds when Redis is down or hung, or a
notice was lost. The first read at start takes in every record still kept, so an instance
started after a change still refuses Redis entries older than it.

Records are pruned once no cache can still hold what they invalidated: older than the Redis
entry lifetime plus a lookup, and at least RETENTION_SECONDS. An instance that could not
read the log for longer than that may have missed pruned records, so it distrusts its whole
in-process cache once it can read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from gateway import metrics
from gateway.cache.redis import SharedCache
from gateway.keys.verify import LOOKUP_TIMEOUT, KeyVerifier
from gateway.store.base import Store, StoreError

log = logging.getLogger("gateway.keys")

BATCH = 1000
RETENTION_SECONDS = 600.0
PRUNE_EVERY = 60.0


def retention_for(redis_cache_ttl: float) -> float:
    """How long records are kept: past any Redis entry written before them (its TTL, plus a
    lookup that read the database just before the change and wrote just after)."""
    return max(RETENTION_SECONDS, redis_cache_ttl + 2 * LOOKUP_TIMEOUT)


class InvalidationPoller:
    def __init__(
        self,
        store: Store,
        verifier: KeyVerifier,
        shared: SharedCache | None,
        *,
        interval: float,
        retention: float = RETENTION_SECONDS,
        timeout: float = LOOKUP_TIMEOUT,
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._shared = shared
        self._interval = interval
        self._retention = retention
        self._timeout = timeout
        self.cursor = 0  # id of the last record applied
        self._read_at: float | None = None  # monotonic time of the last complete read
        self._pruned_at = 0.0
        self._failing = False

    async def poll_once(self) -> int:
        """Apply every record not applied yet; how many there were. Raises StoreError or
        TimeoutError when the database does not answer."""
        first = self._read_at is None
        gap = self._read_at is not None and time.monotonic() - self._read_at > self._retention / 2
        applied = 0
        while True:
            async with asyncio.timeout(self._timeout):
                records = await self._store.read_invalidations(self.cursor, BATCH)
            now = time.time()
            for record in records:
                self._verifier.invalidated(record.key_hash, record.id)
                if not first:  # at start these are history, not news
                    metrics.invalidation_received("log", _age(record.created_at, now))
            if records:
                self.cursor = records[-1].id
                applied += len(records)
                # At start nothing here was cached yet; Redis entries are guarded by versions.
                if not first and self._shared is not None:
                    await self._shared.forget(r.key_hash for r in records)
            if len(records) < BATCH:
                break
        if gap:
            log.warning("the invalidation log was unreadable for long; revalidating every key")
            self._verifier.reset()
        self._read_at = time.monotonic()
        self._verifier.contact()
        return applied

    async def prune(self) -> int:
        """Delete records past the retention, at most every PRUNE_EVERY seconds."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_EVERY:
            return 0
        self._pruned_at = now
        self._verifier.prune_versions(now - self._retention)
        before = datetime.now(UTC) - timedelta(seconds=self._retention)
        async with asyncio.timeout(self._timeout):
            return await self._store.prune_invalidations(before)

    async def run(self) -> None:
        """Poll until cancelled; failures are logged once per outage and retried."""
        while True:
            try:
                await self.poll_once()
                await self.prune()
                if self._failing:
                    log.info("invalidation log readable again")
                self._failing = False
            except (StoreError, TimeoutError, OSError) as exc:
                metrics.database_error()
                if not self._failing:
                    log.warning("cannot read the invalidation log: %s", type(exc).__name__)
                self._failing = True
            await asyncio.sleep(self._interval)


def _age(at: object, now: float) -> float | None:
    """Seconds since `at` (a stored time), or None when the store gave no readable time."""
    return now - at.timestamp() if isinstance(at, datetime) else None

"""Verifying a presented key: offline checks, then in-process cache, Redis, database.

::

    length/ASCII ─ HMAC ─ in-process LRU (seconds) ── hit: done, no parse, no I/O
                              │ miss
                          parse (shape, checksum; or a legacy key's shape, when
                              │  `accept_legacy_keys` is on) ─ bad → 401, no store is touched
                              │
                          Redis (minutes) ─ database (the authority)
                              └ negative entries for unknown keys (their own LRU, so a flood
                                of random keys cannot evict the keys in use), so such a flood
                                costs at most one database lookup per distinct key per period

A request's key is hashed once: `digest(text)`, then `known(digest)` from memory and, on a
miss, `lookup(text, digest)`; `verify(text)` is the three in a row.

Concurrent misses for the same key share one lookup, run as its own task so that a caller
giving up (a client disconnecting) neither cancels it nor poisons the other waiters.

Consistency: an invalidation (revoke, disable, change, owner change) drops the entry *and*
forgets the lookup in flight for it, so a load that read the database before the change
committed may answer the request it was started for (that request raced the change) but is
never cached. `reset()` (the invalidation channel was lost) makes every entry stale at once.
Invalidations arrive from Redis pub/sub and, always, from the database's invalidation log
(`gateway/keys/poller.py`), which also tells `invalidated()` the record's id: a Redis entry
carries the id of the key's latest record when it was read (its version), and one older than
a record this instance has seen is refused, so Redis cannot bring a changed key back.

Outages: if neither the database nor Redis can be reached, an in-process entry is served
only within `stale_window` seconds of the last successful contact with either (not of when
the entry was loaded: a change committed since then may be unknown here); otherwise 503.
Never fail open: a revoked key has no entry to serve (its entry was dropped), and an unknown
one is refused or answered 503.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import UTC, datetime
from typing import Final, Protocol

from gateway import metrics
from gateway.cache.local import LocalCache
from gateway.cache.redis import NEGATIVE, SharedCache
from gateway.errors import Unauthenticated, Unavailable
from gateway.keys import format as keyformat
from gateway.keys.hashing import KeyHasher
from gateway.keys.rehash import PreviousSecrets
from gateway.keys.sharing import Sharing
from gateway.keys.state import KeyState as KeyState
from gateway.keys.state import VerifiedKey as VerifiedKey
from gateway.keys.state import principal_for as principal_for
from gateway.keys.state import verified_key
from gateway.policy.model import Catalog
from gateway.store.base import Store, StoreError

log: Final = logging.getLogger("gateway.keys")
# The clocks of the hot path (`known`): C statics when compiled, no module-dict lookup.
_monotonic: Final = time.monotonic
_wall: Final = time.time

# A database lookup slower than this counts as "database unavailable". It also bounds how long
# a load that read a record before a revocation committed can take to try to cache it, which
# the shared cache's tombstones must outlive (see cache/redis.py TOMBSTONE_SECONDS).
LOOKUP_TIMEOUT: Final = 5.0

# Cached keys loaded within this many seconds of one another (at most 1% of `local_ttl`)
# share their expiry (`_expiry`).
EXPIRY_SHARED: Final = 0.1


_Cached = VerifiedKey | None  # None: no such key


class Unknown:
    """A negative entry: no key has this hash (until `expires`, monotonic time)."""

    __slots__ = ("expires",)

    def __init__(self, expires: float) -> None:
        self.expires = expires


class Watcher(Protocol):
    """Told when cached records are dropped, so what was allowed by them is decided again
    (`gateway/proxy/live.py`: open WebSockets and streams)."""

    def changed(self, digest: bytes) -> None: ...

    def changed_all(self) -> None: ...


class KeyVerifier:
    """Turns a presented key into a Principal, or raises Unauthenticated / Unavailable."""

    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        hasher: KeyHasher,
        prefix: str,
        shared: SharedCache | None,
        local_ttl: float,
        local_size: int,
        negative_ttl: float,
        stale_window: float,
        lookup_timeout: float = LOOKUP_TIMEOUT,
        store_backoff: float = 0.0,
        accepted_prefixes: tuple[str, ...] = (),
        previous: PreviousSecrets | None = None,
        accept_legacy: bool = False,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._hasher = hasher
        self._prefix = prefix
        self._accepted_prefixes = accepted_prefixes
        # BTCPay-format keys (imported): they pass the offline checks on their shape alone.
        self._accept_legacy = accept_legacy
        # Keys hashed with a rotated-out secret: tried only when the database misses.
        self._previous = previous
        self._shared = shared
        self._sharing = Sharing(catalog, limit=2 * local_size)  # what cached keys hold alike
        self._known: LocalCache[VerifiedKey] = LocalCache(local_size)
        self._unknown: LocalCache[Unknown] = LocalCache(local_size)
        self._local_ttl = local_ttl
        self._last_expiry = 0.0  # see `_expiry`
        self._expiry_shared = min(EXPIRY_SHARED, local_ttl / 100)
        self._negative_ttl = negative_ttl
        self._stale_window = stale_window
        self._lookup_timeout = lookup_timeout
        # After the database failed a lookup, misses do not ask it again for this long: they
        # are answered at once (stale window or 503) instead of each waiting for a timeout.
        self._store_backoff = store_backoff
        self._store_down_until = 0.0
        # The lookup in flight per digest. Invalidation removes the entry: a lookup that is no
        # longer registered here when it finishes must not cache what it read.
        self._inflight: dict[bytes, asyncio.Task[_Cached]] = {}
        self._last_used: dict[str, float] = {}  # key id -> unix time; flushed in batches
        # digest -> id of the latest invalidation record seen for it (and when, to prune).
        self._versions: dict[bytes, tuple[int, float]] = {}
        self._contact = time.monotonic()  # last successful database answer
        self.lookups = 0  # database lookups, for tests and metrics
        self.watcher: Watcher | None = None

    # -- the hot path -------------------------------------------------------------------

    async def verify(self, text: str) -> VerifiedKey:
        """The verified key for `text`; Unauthenticated (401) or Unavailable (503) otherwise."""
        digest = self.digest(text)
        return self.known(digest) or await self.lookup(text, digest)

    def digest(self, text: str) -> bytes:
        """The key's hash, which every cache and the store are keyed by. Raises Unauthenticated
        for a text no key of ours can be (too long, non-ASCII), before hashing it."""
        if len(text) > keyformat.MAX_KEY_LEN or not text.isascii():
            self._parse(text)  # raises, naming why
        return self._hasher.digest(text)

    def known(self, digest: bytes) -> VerifiedKey | None:
        """The verified key from the in-process caches alone (the hot path; no I/O), or None
        when only a lookup can tell. Raises as `verify` does for a key known to fail."""
        now = _monotonic()
        # Entries only ever exist for keys that passed `parse`, so a fresh hit skips it.
        entry = self._known.get(digest)
        if entry is not None and entry.expires > now:
            metrics.LOCAL_HIT.pending += 1  # a plain add: the hot path (metrics.Tally)
            return self._usable(entry)
        negative = self._unknown.get(digest)
        if negative is not None and negative.expires > now:
            metrics.key_cache("local", "negative")
            raise Unauthenticated("the API key is not known", code="key-unknown")
        metrics.key_cache("local", "miss")
        return None

    async def lookup(self, text: str, digest: bytes) -> VerifiedKey:
        """`verify` after `known` said None, with the hash already computed (`digest(text)`):
        the offline checks, then Redis and the database."""
        self._parse(text)
        # Another request's lookup may have landed since `known` was asked (the caller may
        # have waited for a task to start): no second Redis or database read for it then.
        found = self.known(digest)
        if found is not None:
            return found
        stale = self._known.get(digest) or self._unknown.get(digest)
        found = await self._load(text, digest, stale)
        if found is None:
            raise Unauthenticated("the API key is not known", code="key-unknown")
        return self._usable(found)

    def _usable(self, found: VerifiedKey) -> VerifiedKey:
        """`found` if its key may be used now (raises otherwise); notes its use."""
        wall = _wall()
        facts = found.facts
        if facts.owner_disabled or facts.status != "active" or facts.expires_at is not None:
            self._check(found, wall)
        self._last_used[found.key_id or ""] = wall
        return found

    def _parse(self, text: str) -> None:
        if self._accept_legacy and keyformat.is_legacy(text):
            return
        try:
            keyformat.parse(text, self._prefix, self._accepted_prefixes)
        except keyformat.MalformedKey as exc:
            raise Unauthenticated(
                f"the API key is malformed ({exc.reason})", code="key-malformed"
            ) from None

    @staticmethod
    def refusal(state: KeyState | VerifiedKey, now: float | None = None) -> str | None:
        """Why a known key cannot be used at unix time `now` (default: now), or None."""
        if state.owner_disabled:
            return "owner-disabled"
        if state.status != "active":
            return "key-disabled"
        if state.expires_at is not None and state.expires_at <= (
            time.time() if now is None else now
        ):
            return "key-expired"
        return None

    def _check(self, found: VerifiedKey, now: float) -> None:
        # Only a caller holding the whole key (id and secret) gets this far, so naming the
        # reason tells nothing to someone who merely knows or guesses a key id.
        reason = self.refusal(found, now)
        if reason is None:
            return
        log.info("key %s refused: %s", found.key_id, reason)
        raise Unauthenticated(_REASON_TEXT[reason], code=reason)

    # -- misses ---------------------------------------------------------------------------

    async def _load(self, text: str, digest: bytes, stale: VerifiedKey | Unknown | None) -> _Cached:
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(text, digest, stale))
            self._inflight[digest] = task
            task.add_done_callback(functools.partial(self._landed, digest))
        # shield: a caller that is cancelled stops waiting; the lookup goes on for the others.
        return await asyncio.shield(task)

    def _landed(self, digest: bytes, task: asyncio.Task[_Cached]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved here: if every waiter went away, nobody else will

    def _current(self, digest: bytes) -> bool:
        """Whether the running lookup for `digest` was not invalidated since it started."""
        return self._inflight.get(digest) is asyncio.current_task()

    async def _fetch(
        self, text: str, digest: bytes, stale: VerifiedKey | Unknown | None
    ) -> _Cached:
        outdated = False  # Redis holds a record older than a change seen here: replace it
        if self._shared is not None:
            cached = await self._shared.get(digest)
            metrics.key_cache(
                "redis", "miss" if cached is None else "negative" if cached == NEGATIVE else "hit"
            )
            if cached == NEGATIVE:
                self._remember(digest, None)
                return None
            if isinstance(cached, dict):
                verified: _Cached = None
                try:
                    outdated = int(cached.get("version", 0)) < self.version(digest)
                    if not outdated:
                        verified = self._verified(KeyState.from_json(cached))
                except (KeyError, TypeError, ValueError):
                    outdated = True  # an unreadable record: ask the database instead
                if verified is not None:
                    self._remember(digest, verified)
                    return verified
        failure: str | None = None
        cacheable = True
        backing_off = time.monotonic() < self._store_down_until
        if backing_off:
            failure = "backing off after a failure"
        else:
            try:
                self.lookups += 1
                async with asyncio.timeout(self._lookup_timeout):
                    found = await self._store.find_key_by_hash(digest)
                    if found is None and self._previous is not None:
                        found, cacheable = await self._previous.find(text, digest, self.invalidate)
                self._contact = time.monotonic()
            except (StoreError, TimeoutError) as exc:
                failure = type(exc).__name__
                metrics.key_cache("database", "error")
                metrics.database_error()
                self._store_down_until = time.monotonic() + self._store_backoff
        if failure is not None:
            # Serve the last known answer only within its stale window, and never one that
            # was invalidated meanwhile (then this lookup is no longer current).
            if (
                stale is not None
                and time.monotonic() < self.last_contact + self._stale_window
                and self._current(digest)
            ):
                log.warning(
                    "database unavailable (%s); serving a cached key record in the stale window",
                    failure,
                )
                return stale if isinstance(stale, VerifiedKey) else None
            # Logged once per failure, not once per request answered during the back-off.
            if not backing_off:
                log.error("database unavailable while verifying a key: %s", failure)
            raise Unavailable("the key store is unavailable; try again shortly")
        metrics.key_cache("database", "unknown" if found is None else "found")
        if found is None:
            if self._remember(digest, None) and self._shared is not None:
                await self._shared.put(digest, None, replace=outdated)
            return None
        state = KeyState.from_store(found)
        verified = self._verified(state)
        if not cacheable:  # found under a previous secret's hash, which it still has
            return verified
        if self._remember(digest, verified) and self._shared is not None:
            record = state.to_json()
            record["version"] = found.version
            await self._shared.put(digest, record, replace=outdated)
        return verified

    def _remember(self, digest: bytes, value: _Cached) -> bool:
        """Cache a lookup's result unless the key was invalidated while it ran."""
        if not self._current(digest):
            return False
        now = time.monotonic()
        if value is None:
            self._known.drop(digest)
            self._unknown.put(digest, Unknown(now + self._negative_ttl))
        else:
            self._unknown.drop(digest)
            value.expires = self._expiry(now)
            self._known.put(digest, value)
        return True

    def _expiry(self, now: float) -> float:
        """When an entry loaded at `now` must be re-validated: `local_ttl` later, or up to
        `EXPIRY_SHARED` seconds (1% of it) earlier. Keys loaded in the same interval share one
        float object, which otherwise costs 32 bytes per cached key."""
        due = now + self._local_ttl
        expiry = self._last_expiry
        if not due - self._expiry_shared < expiry <= due:
            expiry = self._last_expiry = due
        return expiry

    def _verified(self, state: KeyState) -> VerifiedKey:
        return verified_key(state, self._catalog, self._sharing)

    # -- invalidation and housekeeping -------------------------------------------------

    @property
    def cache_size(self) -> int:
        return len(self._known) + len(self._unknown)

    def use_catalog(self, catalog: Catalog) -> None:
        """Parse permissions against `catalog` from now on (the policy was reloaded).

        Cached keys keep their records (nothing about the key changed) and get principals
        built against the new catalog, so no lookup is needed and the stale window still
        holds; a lookup in flight builds its principal when it lands, with the new one.
        """
        self._catalog = catalog
        # Shared parts (parsed grants, decision memos) belong to one catalog: start afresh.
        self._sharing = Sharing(catalog, limit=self._sharing.limit)

        self._known.update_values(lambda found: found.reparsed(self._sharing))

    def drop(self, digest: bytes) -> None:
        """Forget one key here, including any lookup of it in flight."""
        self._known.drop(digest)
        self._unknown.drop(digest)
        self._inflight.pop(digest, None)
        if self.watcher is not None:
            self.watcher.changed(digest)

    def reset(self) -> None:
        """Distrust everything cached: the invalidation channel was (re)connected and
        notices may have been missed. Entries must be revalidated before they are served
        again, but stay usable within their stale window should the database be down."""
        now = time.monotonic()
        self._known.expire_all(now)
        self._unknown.expire_all(now)
        self._inflight.clear()
        if self.watcher is not None:
            self.watcher.changed_all()

    @property
    def last_contact(self) -> float:
        """Monotonic time of the last successful answer from the database or Redis."""
        if self._shared is None:
            return self._contact
        return max(self._contact, self._shared.last_contact)

    def contact(self) -> None:
        """The database answered (the invalidation log was read)."""
        self._contact = time.monotonic()

    def version(self, digest: bytes) -> int:
        """The id of the latest invalidation record seen here for a key (0: none)."""
        seen = self._versions.get(digest)
        return seen[0] if seen is not None else 0

    def invalidated(self, digest: bytes, version: int) -> None:
        """Apply one invalidation record: cached copies older than `version` are stale."""
        if version > self.version(digest):
            self._versions[digest] = (version, time.monotonic())
        self.drop(digest)

    def prune_versions(self, before: float) -> None:
        """Forget versions seen before monotonic time `before` (by then no cached record
        older than them can be left anywhere)."""
        for digest in [d for d, (_, at) in self._versions.items() if at < before]:
            del self._versions[digest]

    async def invalidate(self, digests: list[bytes]) -> None:
        """Forget keys here and (through Redis) on every instance."""
        for digest in digests:
            self.drop(digest)
        if self._shared is not None:
            await self._shared.invalidate(digests)

    def take_last_used(self) -> dict[str, datetime]:
        taken, self._last_used = self._last_used, {}
        return {key_id: datetime.fromtimestamp(at, UTC) for key_id, at in taken.items()}


_REASON_TEXT: Final = {
    "owner-disabled": "the API key's owner is disabled",
    "key-disabled": "the API key is disabled",
    "key-expired": "the API key has expired",
}

"""Shared key cache and invalidation channel on Redis.

Entries are keyed by the key's HMAC (hex), never by the key. Values are small JSON records.
Redis is an accelerator, never the authority: any Redis error makes the caller go to the
database, and a short back-off keeps a dead Redis from adding a timeout to every request.

Consistency with a lookup in flight: an instance may read a key's record from the database
just before a revocation commits and write it to Redis just after the revocation was
published. So invalidation does not delete an entry, it overwrites it with a short-lived
*tombstone*, and every cache write is `SET NX`: a write that lands after the invalidation
finds the tombstone and is dropped. The tombstone outlives any lookup (the verifier bounds a
lookup at LOOKUP_TIMEOUT), so no reader that started before the change can cache it.

Invalidation records in the database are the durable channel: a change made while Redis was
unreachable leaves the old entry in Redis, so entries carry the id of the key's latest
invalidation record when they were read (`version`) and the verifier refuses and replaces
one older than a record it has seen (see keys/verify.py and keys/poller.py).

Names: `<namespace>:key:<hmac hex>` and the channel `<namespace>:invalidate`, so deployments
(or test runs) sharing a Redis keep apart; pub/sub channels are shared by every database
number of a server, which the namespace also covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import metrics

log = logging.getLogger("gateway.cache")

DEFAULT_NAMESPACE = "keygate"
NEGATIVE = "-"  # stored value for "no such key"
TOMBSTONE = "x"  # stored value for "just invalidated: do not cache this key yet"
TOMBSTONE_SECONDS = 30  # > the longest lookup: database_timeout (<= 20 s) + redis_timeout (<= 5 s)
BACKOFF_SECONDS = 1.0
# Bound on one Redis call (the `redis_timeout` setting), connecting included. Applied with
# asyncio.timeout around our calls rather than as redis-py's socket_timeout, which wraps
# every send in wait_for (a task per command). A Redis that hangs accepts connections (the
# kernel completes them) and never answers, so only this bound notices it.
SOCKET_TIMEOUT = 0.5
# An invalidation that could not be published is retried this often, for as long as an entry
# written before it could live in Redis (its TTL): until then another instance could serve it.
RETRY_SECONDS = 1.0
# The invalidation channel pings its connection this often and reconnects when it hears
# nothing for three intervals: a connection that died without a reset (or a Redis that
# accepts connections but does not answer) would otherwise look like a quiet channel while
# every notice is lost.
PING_SECONDS = 5.0
RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library swallowed.

    On Python 3.11 `asyncio.wait_for` (used inside redis-py, e.g. to connect) drops a
    cancellation that arrives just as the awaited operation completes. The task then still
    counts the request (`cancelling()`), so a loop that checks it stops as asked instead of
    running forever and hanging shutdown.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class SharedCache:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl: float,
        negative_ttl: float,
        listener: aioredis.Redis | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        ping_seconds: float = PING_SECONDS,
        deadline: float = SOCKET_TIMEOUT,
    ) -> None:
        self._redis = client
        self._deadline = deadline
        # Pub/sub idles for long stretches, so its connection must not use the short read
        # timeout of the cache connection.
        self._listener = listener or client
        self._ttl = max(1, int(ttl))
        self._negative_ttl = max(1, int(negative_ttl + 0.999))
        self._prefix = f"{namespace}:key:"
        self.channel = f"{namespace}:invalidate"
        self._ping_seconds = ping_seconds
        self._down_until = 0.0
        # Monotonic time of Redis's last answer: with the database's, it starts the stale
        # window of an instance that can reach neither.
        self.last_contact = 0.0
        self._unpublished: dict[str, float] = {}  # hmac hex -> give up retrying at (monotonic)
        self._retry: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl: float,
        negative_ttl: float,
        namespace: str = DEFAULT_NAMESPACE,
        ping_seconds: float = PING_SECONDS,
        deadline: float = SOCKET_TIMEOUT,
    ) -> SharedCache:
        # socket_connect_timeout also bounds closing a connection (redis-py waits for the
        # close under it), so shutting down with Redis hung stays bounded.
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=deadline,
            health_check_interval=30,
        )
        listener = aioredis.Redis.from_url(
            url, socket_connect_timeout=deadline, socket_keepalive=True
        )
        return cls(
            client,
            ttl=ttl,
            negative_ttl=negative_ttl,
            listener=listener,
            namespace=namespace,
            ping_seconds=ping_seconds,
            deadline=deadline,
        )

    def name(self, digest: bytes) -> str:
        """The Redis key of a key's entry (its HMAC, never the key)."""
        return self._prefix + digest.hex()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + BACKOFF_SECONDS
        log.warning("redis %s failed (%s); using the database directly", what, type(exc).__name__)
        metrics.redis_error()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._deadline):
                return bool(await self._redis.ping())
        except (RedisError, OSError) as exc:
            self._failed("ping", exc)
            return False

    async def get(self, digest: bytes) -> dict[str, Any] | str | None:
        """The cached record, NEGATIVE, or None (absent, invalidated, or Redis unavailable)."""
        if not self.available:
            return None
        try:
            async with asyncio.timeout(self._deadline):
                raw = await self._redis.get(self.name(digest))
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        self.last_contact = time.monotonic()
        if raw is None or raw == TOMBSTONE.encode():
            return None
        if raw == NEGATIVE.encode():
            return NEGATIVE
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    async def put(
        self, digest: bytes, record: dict[str, Any] | None, *, replace: bool = False
    ) -> None:
        """Cache a record (None: "no such key") unless the key was invalidated recently.

        `replace`: the entry there was found older than a change (or unreadable), so it is
        overwritten rather than kept."""
        if not self.available:
            return
        if record is None:
            value, ttl = NEGATIVE, self._negative_ttl
        else:
            value, ttl = json.dumps(record, separators=(",", ":")), self._ttl
        try:
            # NX: never overwrite a tombstone (nor an entry another instance just wrote).
            async with asyncio.timeout(self._deadline):
                await self._redis.set(self.name(digest), value, ex=ttl, nx=not replace)
        except (RedisError, OSError) as exc:
            self._failed("set", exc)
            return
        self.last_contact = time.monotonic()

    async def forget(self, digests: Iterable[bytes]) -> None:
        """Tombstone entries without publishing (the instances learn the change from the
        database's invalidation log); best effort, as versions guard what this misses."""
        names = [self.name(d) for d in digests]
        if not names or not self.available:
            return
        try:
            async with (
                asyncio.timeout(self._deadline),
                self._redis.pipeline(transaction=False) as pipe,
            ):
                for name in names:
                    pipe.set(name, TOMBSTONE, ex=TOMBSTONE_SECONDS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("invalidate", exc)

    async def invalidate(self, digests: Iterable[bytes]) -> None:
        """Tombstone entries and tell every instance to drop its in-process copy.

        If Redis cannot be reached the notice is retried in the background until entries
        written before it would have expired anyway; a process that exits first (the CLI)
        logs how many notices it could not deliver.
        """
        hexes = [d.hex() for d in digests]
        if not hexes:
            return
        if await self._publish(hexes):
            return
        give_up = time.monotonic() + self._ttl
        for item in hexes:
            self._unpublished[item] = give_up
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_unpublished())

    async def _publish(self, hexes: list[str]) -> bool:
        try:
            async with (
                asyncio.timeout(self._deadline),
                self._redis.pipeline(transaction=False) as pipe,
            ):
                for item in hexes:
                    pipe.set(self._prefix + item, TOMBSTONE, ex=TOMBSTONE_SECONDS)
                pipe.publish(self.channel, " ".join(hexes))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("invalidate", exc)
            return False
        self.last_contact = time.monotonic()
        return True

    async def _retry_unpublished(self) -> None:
        while self._unpublished:
            await asyncio.sleep(RETRY_SECONDS)
            now = time.monotonic()
            for item in [h for h, until in self._unpublished.items() if until <= now]:
                del self._unpublished[item]
            batch = list(self._unpublished)
            if batch and await self._publish(batch):
                for item in batch:
                    self._unpublished.pop(item, None)
                log.info("delivered %d delayed key invalidation(s)", len(batch))

    async def listen(self, on_drop: Callable[[bytes], None], on_reset: Callable[[], None]) -> None:
        """Apply invalidations from every instance until cancelled; reconnects forever.

        While disconnected we may miss notices, so losing the channel and every
        (re)subscription call `on_reset`: nothing cached before can be trusted unchecked.
        """
        delay = RECONNECT_MIN
        while True:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
            try:
                # Bounded: connecting includes a handshake that a hung Redis never answers.
                async with asyncio.timeout(3 * self._ping_seconds):
                    await pubsub.subscribe(self.channel)
                _raise_if_cancelled()
                on_reset()
                delay = RECONNECT_MIN
                await self._pump(pubsub, on_drop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                log.warning(
                    "redis invalidation channel lost (%s); reconnecting", type(exc).__name__
                )
                on_reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8 on

    async def _pump(self, pubsub: Any, on_drop: Callable[[bytes], None]) -> None:
        heard = time.monotonic()
        next_ping = heard + self._ping_seconds
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self._ping_seconds))
            _raise_if_cancelled()
            now = time.monotonic()
            if message is not None:
                heard = self.last_contact = now
                if message.get("type") == "message":
                    for item in bytes(message["data"]).split():
                        with contextlib.suppress(ValueError):
                            on_drop(bytes.fromhex(item.decode("ascii")))
                            metrics.invalidation_received("pubsub")
            if now - heard > 3 * self._ping_seconds:
                raise ConnectionError("no answer to pings on the invalidation channel")
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + self._ping_seconds

    async def close(self) -> None:
        if self._retry is not None and not self._retry.done():
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._unpublished:
            log.warning(
                "%d key invalidation(s) could not be published to Redis; running instances "
                "apply them from the database's invalidation log instead",
                len(self._unpublished),
            )
        await self._redis.aclose()
        if self._listener is not self._redis:
            await self._listener.aclose()

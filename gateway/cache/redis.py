"""Shared key cache and invalidation channel on Redis.

Entries are keyed by the key's HMAC (hex), never by the key. Values are small JSON records.
Redis is an accelerator, never the authority: any Redis error makes the caller go to the
database, and a short back-off keeps a dead Redis from adding a timeout to every request.
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

log = logging.getLogger("gateway.cache")

NAMESPACE = "keygate:key:"
CHANNEL = "keygate:invalidate"
NEGATIVE = "-"  # stored value for "no such key"
BACKOFF_SECONDS = 1.0
SOCKET_TIMEOUT = 0.5
# A reader that fetched from the database just before a revocation committed can write the
# old record back after our delete; a second delete (and notice) shortly after closes that gap.
SECOND_DELETE_DELAY = 0.5


class SharedCache:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl: float,
        negative_ttl: float,
        listener: aioredis.Redis | None = None,
    ) -> None:
        self._redis = client
        # Pub/sub idles for long stretches, so its connection must not use the short read
        # timeout of the cache connection.
        self._listener = listener or client
        self._ttl = max(1, int(ttl))
        self._negative_ttl = max(1, int(negative_ttl + 0.999))
        self._down_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, *, ttl: float, negative_ttl: float) -> SharedCache:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
        )
        listener = aioredis.Redis.from_url(url, socket_connect_timeout=SOCKET_TIMEOUT)
        return cls(client, ttl=ttl, negative_ttl=negative_ttl, listener=listener)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + BACKOFF_SECONDS
        log.warning("redis %s failed (%s); using the database directly", what, type(exc).__name__)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError) as exc:
            self._failed("ping", exc)
            return False

    async def get(self, digest: bytes) -> dict[str, Any] | str | None:
        """The cached record, NEGATIVE, or None (absent, or Redis unavailable)."""
        if not self.available:
            return None
        try:
            raw = await self._redis.get(NAMESPACE + digest.hex())
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        if raw is None:
            return None
        if raw == NEGATIVE.encode():
            return NEGATIVE
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    async def put(self, digest: bytes, record: dict[str, Any] | None) -> None:
        if not self.available:
            return
        try:
            if record is None:
                await self._redis.set(NAMESPACE + digest.hex(), NEGATIVE, ex=self._negative_ttl)
            else:
                await self._redis.set(
                    NAMESPACE + digest.hex(),
                    json.dumps(record, separators=(",", ":")),
                    ex=self._ttl,
                )
        except (RedisError, OSError) as exc:
            self._failed("set", exc)

    async def invalidate(self, digests: Iterable[bytes]) -> None:
        """Delete entries and tell every instance to drop its in-process copy."""
        hexes = [d.hex() for d in digests]
        if not hexes:
            return
        await self._delete_and_publish(hexes)
        task = asyncio.create_task(self._again(hexes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _again(self, hexes: list[str]) -> None:
        await asyncio.sleep(SECOND_DELETE_DELAY)
        await self._delete_and_publish(hexes)

    async def _delete_and_publish(self, hexes: list[str]) -> None:
        try:
            await self._redis.delete(*(NAMESPACE + h for h in hexes))
            await self._redis.publish(CHANNEL, " ".join(hexes))
        except (RedisError, OSError) as exc:
            # The entries expire on their own; instances also reset on reconnect.
            self._failed("invalidate", exc)

    async def listen(self, on_drop: Callable[[bytes], None], on_reset: Callable[[], None]) -> None:
        """Apply invalidations from other instances until cancelled; reconnects forever.

        While disconnected we may miss notices, so every (re)subscription starts by
        dropping the whole in-process cache: stale entries cannot survive a gap.
        """
        delay = 0.1
        while True:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                on_reset()
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    for item in message["data"].split():
                        with contextlib.suppress(ValueError):
                            on_drop(bytes.fromhex(item.decode("ascii")))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning(
                    "redis invalidation channel lost (%s); reconnecting", type(exc).__name__
                )
                on_reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._redis.aclose()
        if self._listener is not self._redis:
            await self._listener.aclose()

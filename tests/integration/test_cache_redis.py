"""The shared cache and invalidation channel against a real Redis (taken down via a proxy)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.cache.redis import NEGATIVE, TOMBSTONE, SharedCache
from tests.integration.test_auth_support import TcpProxy, free_port, wait_until

RECORD = {"key_id": "apk_0123456789abcdef", "status": "active"}


def _cache(url: str, namespace: str | None = None, **kw: Any) -> SharedCache:
    """A shared cache on `url`, in a namespace of its own unless one is given."""
    ns = namespace or f"kgtest{uuid.uuid4().hex[:10]}"
    return SharedCache.from_url(url, ttl=300, negative_ttl=5, namespace=ns, **kw)


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(int(redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]))
    await proxy.start()
    yield proxy
    await proxy.stop()


class Recorder:
    """Collects what a listener reports."""

    def __init__(self) -> None:
        self.dropped: list[bytes] = []
        self.resets = 0

    def drop(self, digest: bytes) -> None:
        self.dropped.append(digest)

    def reset(self) -> None:
        self.resets += 1


@contextlib.asynccontextmanager
async def listening(cache: SharedCache, recorder: Recorder) -> AsyncIterator[None]:
    task = asyncio.create_task(cache.listen(recorder.drop, recorder.reset))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return check()

    return probe


async def test_records_and_negative_entries_round_trip(redis_url: str) -> None:
    """A record comes back as stored; an unknown key comes back as NEGATIVE."""
    cache = _cache(redis_url)
    try:
        known, unknown = secrets.token_bytes(32), secrets.token_bytes(32)
        await cache.put(known, RECORD)
        await cache.put(unknown, None)
        assert await cache.get(known) == RECORD
        assert await cache.get(unknown) == NEGATIVE
        assert await cache.get(secrets.token_bytes(32)) is None
    finally:
        await cache.close()


async def test_unreadable_values_are_misses(redis_url: str) -> None:
    """Garbage under a key's name is treated as absent (the database decides), never trusted."""
    cache = _cache(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        digest = secrets.token_bytes(32)
        for junk in (b"{not json", b"[1, 2]", b"42"):
            await client.set(cache.name(digest), junk)
            assert await cache.get(digest) is None
    finally:
        await client.aclose()
        await cache.close()


async def test_a_write_after_an_invalidation_is_refused(redis_url: str) -> None:
    """Invalidation leaves a tombstone: a late writer (a lookup that read the database before
    the change) cannot put the old record back, and readers see a miss."""
    cache, late_writer = _cache(redis_url), None
    try:
        late_writer = _cache(redis_url, namespace=cache.channel.split(":")[0])
        digest = secrets.token_bytes(32)
        await cache.put(digest, RECORD)
        await cache.invalidate([digest])
        await late_writer.put(digest, RECORD)
        await late_writer.put(digest, None)
        assert await cache.get(digest) is None
        client = aioredis.Redis.from_url(redis_url)
        assert await client.get(cache.name(digest)) == TOMBSTONE.encode()
        assert 0 < await client.ttl(cache.name(digest)) <= 30
        await client.aclose()
    finally:
        await cache.close()
        if late_writer is not None:
            await late_writer.close()


async def test_invalidations_reach_listeners_of_the_same_namespace_only(redis_url: str) -> None:
    """A listener applies notices on its namespace's channel and not another deployment's."""
    ours, theirs = _cache(redis_url), _cache(redis_url)
    recorder = Recorder()
    try:
        async with listening(ours, recorder):
            assert await wait_until(holds(lambda: recorder.resets >= 1))
            foreign, mine = secrets.token_bytes(32), secrets.token_bytes(32)
            await theirs.invalidate([foreign])
            await ours.invalidate([mine])
            assert await wait_until(holds(lambda: mine in recorder.dropped))
            assert foreign not in recorder.dropped
    finally:
        await ours.close()
        await theirs.close()


async def test_redis_down_degrades_quietly(redis_url: str) -> None:
    """A closed port: reads miss, writes and invalidations are dropped, nothing raises."""
    cache = _cache(f"redis://127.0.0.1:{free_port()}/0")
    try:
        digest = secrets.token_bytes(32)
        assert await cache.get(digest) is None
        await cache.put(digest, RECORD)
        await cache.invalidate([digest])
        assert not await cache.ping()
        assert not cache.available  # backing off: the next requests skip Redis altogether
    finally:
        await cache.close()


async def test_the_listener_reconnects_and_resets_after_losing_redis(
    redis_url: str, redis_proxy: TcpProxy
) -> None:
    """Losing the channel resets the in-process cache (notices may be missed), and so does
    subscribing again; notices flow again afterwards."""
    via_proxy = _cache(redis_proxy.url(redis_url))
    publisher = _cache(redis_url, namespace=via_proxy.channel.split(":")[0])
    recorder = Recorder()
    try:
        async with listening(via_proxy, recorder):
            assert await wait_until(holds(lambda: recorder.resets == 1))
            await redis_proxy.stop()
            assert await wait_until(holds(lambda: recorder.resets >= 2))
            await redis_proxy.start()
            digest = secrets.token_bytes(32)

            async def delivered() -> bool:
                await publisher.invalidate([digest])
                return digest in recorder.dropped

            assert await wait_until(delivered)
            assert recorder.resets >= 3
    finally:
        await via_proxy.close()
        await publisher.close()


async def test_a_silent_channel_is_detected_and_reconnected(
    redis_url: str, redis_proxy: TcpProxy
) -> None:
    """A connection that stops answering (no reset, no data) is noticed by its pings."""
    via_proxy = _cache(redis_proxy.url(redis_url), ping_seconds=0.1)
    publisher = _cache(redis_url, namespace=via_proxy.channel.split(":")[0])
    recorder = Recorder()
    try:
        async with listening(via_proxy, recorder):
            assert await wait_until(holds(lambda: recorder.resets == 1))
            redis_proxy.hold()
            assert await wait_until(holds(lambda: recorder.resets >= 2))
            redis_proxy.release()
            digest = secrets.token_bytes(32)

            async def delivered() -> bool:
                await publisher.invalidate([digest])
                return digest in recorder.dropped

            assert await wait_until(delivered)
    finally:
        await via_proxy.close()
        await publisher.close()


async def test_an_unpublished_invalidation_is_retried_when_redis_returns(
    redis_url: str, redis_proxy: TcpProxy
) -> None:
    """An invalidation made while Redis is unreachable is delivered once it is back."""
    via_proxy = _cache(redis_proxy.url(redis_url))
    direct = _cache(redis_url, namespace=via_proxy.channel.split(":")[0])
    recorder = Recorder()
    try:
        async with listening(direct, recorder):
            assert await wait_until(holds(lambda: recorder.resets == 1))
            digest = secrets.token_bytes(32)
            await direct.put(digest, RECORD)
            await redis_proxy.stop()
            await via_proxy.invalidate([digest])
            assert await direct.get(digest) == RECORD  # not delivered yet
            await redis_proxy.start()
            assert await wait_until(holds(lambda: digest in recorder.dropped))
            assert await direct.get(digest) is None
    finally:
        await via_proxy.close()
        await direct.close()


async def test_the_listener_stops_when_cancelled_even_while_connecting(redis_url: str) -> None:
    """Cancelling the listener always ends it, also when the cancellation lands during the
    connect/subscribe (where redis-py's wait_for on Python 3.11 can swallow it)."""
    rng = random.Random(1)
    cache = _cache(redis_url)
    try:
        for _ in range(100):
            task = asyncio.create_task(cache.listen(lambda _digest: None, lambda: None))
            await asyncio.sleep(rng.uniform(0, 0.02))
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=10)
            assert done, "the listener ignored its cancellation"
    finally:
        await cache.close()

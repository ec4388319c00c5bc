"""Credits paid while Redis is unreachable (the per-instance fallback) are written behind to
the store: on a throwaway redis-server killed or hung, on both stores. The stored balance
after the outage has the outage's spends; the Redis balance that predates them is dropped
rather than written back over them; the shares of two instances add up; an administrator's
change during the outage wins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.limits.redis_engine import BACKOFF_SECONDS, RedisLimiter
from gateway.services import Services, open_services
from gateway.store.base import Audit, KeyQuota
from tests.conftest import make_settings
from tests.integration.faults import ThrowawayRedis
from tests.integration.upstream import free_port


@pytest.fixture
async def services(store_url: str) -> AsyncIterator[Services]:
    async with open_services(make_settings(store_url)) as s:
        yield s


@pytest.fixture
def redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def key_with_credits(services: Services, credits: int) -> str:
    owner = await services.users.create(
        email="fb@example.com", password=None, actor="test", is_service=True
    )
    key = await services.keys.create(owner=owner, creator=None, label="fb", permissions=[])
    quota = KeyQuota(key.record.id, credits=credits)
    await services.store.set_quota(quota, Audit("test", "key.quota", "k"))
    return key.record.id


async def stored(services: Services, key_id: str) -> int | None:
    quota = await services.store.get_quota(key_id)
    assert quota is not None
    return quota.credits


async def pay(limiter: RedisLimiter, key_id: str, times: int) -> list[bool]:
    return [(await limiter.check([], [], 1, key_id)).allowed for _ in range(times)]


async def test_spends_during_a_redis_outage_reach_the_store(
    services: Services, redis: ThrowawayRedis
) -> None:
    """10 credits, 2 spent through Redis and written behind (8 stored); Redis killed: 3 more
    paid on the fallback are taken off the store while Redis is still down (5); Redis back,
    empty: the balance reloads from the store (5), so the next spend leaves 4."""
    key_id = await key_with_credits(services, 10)
    limiter = RedisLimiter.from_url(redis.url, namespace="kgfb", deadline=0.3, store=services.store)
    try:
        assert await pay(limiter, key_id, 2) == [True, True]
        await limiter.flush()
        assert await stored(services, key_id) == 8
        redis.kill()
        assert await pay(limiter, key_id, 3) == [True] * 3
        assert limiter.degraded
        await limiter.flush()
        assert await stored(services, key_id) == 5
        await limiter.flush()  # written once, not again
        assert await stored(services, key_id) == 5
        redis.start()
        await asyncio.sleep(BACKOFF_SECONDS + 0.1)
        outcome = await limiter.check([], [], 1, key_id)
        assert not limiter.degraded
        assert outcome.credits is not None
        assert outcome.credits.balance == 4
        await limiter.flush()
        assert await stored(services, key_id) == 4
    finally:
        await limiter.close()


async def test_a_redis_balance_that_predates_the_outage_is_dropped_not_written_back(
    services: Services, redis: ThrowawayRedis
) -> None:
    """Redis hung (it keeps its data): it still holds 8 when it answers again, while 3 were
    paid on the fallback meanwhile. That 8 is dropped, neither written over the store's 5 nor
    spent from: the next spend leaves 4, in Redis and then in the store."""
    key_id = await key_with_credits(services, 10)
    limiter = RedisLimiter.from_url(redis.url, namespace="kgfb", deadline=0.3, store=services.store)
    try:
        assert await pay(limiter, key_id, 2) == [True, True]
        await limiter.flush()
        redis.hang()
        try:
            assert await pay(limiter, key_id, 2) == [True] * 2
            await limiter.flush()
            assert await stored(services, key_id) == 6
            # Past the back-off, still hung: the next try drops the stale balance first,
            # finds Redis silent, and the request is decided on the fallback all the same.
            await asyncio.sleep(BACKOFF_SECONDS + 0.1)
            started = time.monotonic()
            assert await pay(limiter, key_id, 1) == [True]
            assert time.monotonic() - started < 1.0
            assert limiter.degraded
            await limiter.flush()
            assert await stored(services, key_id) == 5
        finally:
            redis.resume()
        await asyncio.sleep(BACKOFF_SECONDS + 0.1)
        outcome = await limiter.check([], [], 1, key_id)
        assert outcome.credits is not None
        assert outcome.credits.balance == 4
        assert await limiter.balance(key_id) == 4
        await limiter.flush()
        assert await stored(services, key_id) == 4
    finally:
        await limiter.close()


async def test_the_shares_of_two_instances_add_up_in_the_store(services: Services) -> None:
    """Two instances on the fallback (Redis never reachable), each with half of 10: one pays
    3, the other 5 (its whole share, then refused): the store ends at 2."""
    key_id = await key_with_credits(services, 10)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    a = RedisLimiter.from_url(dead, namespace="kgfb", deadline=0.3, store=services.store)
    b = RedisLimiter.from_url(dead, namespace="kgfb", deadline=0.3, store=services.store)
    a.live_instances = b.live_instances = 2
    try:
        assert await pay(a, key_id, 3) == [True] * 3
        assert await pay(b, key_id, 6) == [True] * 5 + [False]
        await a.flush()
        await b.flush()
    finally:
        await a.close()
        await b.close()
    assert await stored(services, key_id) == 2


async def test_an_administrators_change_during_the_outage_wins(services: Services) -> None:
    """Credits set to 100 by an administrator while this instance pays on the fallback: its
    write finds the version moved on and writes nothing; the next spend reads the new 100
    (the fallback's share of it: all of it, one instance)."""
    key_id = await key_with_credits(services, 10)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    limiter = RedisLimiter.from_url(dead, namespace="kgfb", deadline=0.3, store=services.store)
    try:
        assert await pay(limiter, key_id, 3) == [True] * 3
        quota = KeyQuota(key_id, credits=100)
        await services.store.set_quota(quota, Audit("test", "key.quota", "k"))
        await limiter.flush()
        assert await stored(services, key_id) == 100
        outcome = await limiter.check([], [], 1, key_id)
        assert outcome.credits is not None
        assert outcome.credits.balance == 99
        await limiter.flush()
        assert await stored(services, key_id) == 99
    finally:
        await limiter.close()

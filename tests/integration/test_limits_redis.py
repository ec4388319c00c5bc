"""The shared rate-limit engine on a real Redis: two instances (two engines, as two gateways
hold) spend one budget, racing for the last unit never over-spends, the clock is Redis's,
a flushed script cache is reloaded, and a dead Redis falls back to a per-instance share."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.limits.credits import CreditState, period_of
from gateway.limits.model import RateLimit
from gateway.limits.redis_engine import RedisLimiter
from gateway.limits.scripts import PERIOD_LUA
from gateway.services import Services
from gateway.store.base import Audit, KeyQuota
from tests.faults import hung, throwaway_redis
from tests.integration.upstream import free_port
from tests.services import _wait_port

MINUTE = RateLimit("m", 10, 60, 10)


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisLimiter, RedisLimiter]]:
    """Two engines on one Redis namespace: instances A and B."""
    namespace = f"kgtest{uuid.uuid4().hex[:8]}"
    a = RedisLimiter.from_url(redis_url, namespace=namespace, deadline=2.0)
    b = RedisLimiter.from_url(redis_url, namespace=namespace, deadline=2.0)
    yield a, b
    await a.close()
    await b.close()


async def spend(limiter: RedisLimiter, limits: list[RateLimit], cost: int = 1) -> bool:
    buckets = [f"{limit.name}:k:apk_1" for limit in limits]
    return (await limiter.check(buckets, limits, cost)).allowed


async def test_two_instances_spend_one_budget(pair: tuple[RedisLimiter, RedisLimiter]) -> None:
    """Requests alternating between A and B: exactly ten of twenty pass, as on one instance."""
    a, b = pair
    results = [await spend(a if i % 2 else b, [MINUTE]) for i in range(20)]
    assert results == [True] * 10 + [False] * 10


async def test_racing_for_the_last_units_never_overspends(
    pair: tuple[RedisLimiter, RedisLimiter],
) -> None:
    """Two hundred concurrent requests from both instances for a budget of ten: ten pass, all
    decided by Redis (neither instance fell back)."""
    a, b = pair
    results = await asyncio.gather(*(spend(a if i % 2 else b, [MINUTE]) for i in range(200)))
    assert not a.degraded
    assert not b.degraded
    assert sum(results) == 10


async def test_all_limits_must_pass_and_a_refusal_spends_nothing(
    pair: tuple[RedisLimiter, RedisLimiter],
) -> None:
    """With a loose and a tight limit, the tight one refuses and the loose one keeps its units
    (the script writes nothing unless every limit passed)."""
    a, b = pair
    loose, tight = RateLimit("loose", 5, 60, 5), RateLimit("tight", 1, 60, 1)
    assert await spend(a, [loose, tight])
    outcome = await b.check(["loose:k:apk_1", "tight:k:apk_1"], [loose, tight], 1)
    assert not outcome.allowed
    assert outcome.reported.limit == tight
    assert [await spend(b, [loose]) for _ in range(5)] == [True] * 4 + [False]


async def test_bursts_and_refill_follow_redis_time(
    pair: tuple[RedisLimiter, RedisLimiter],
) -> None:
    """`4/s burst 2`: two at once, then one every 250 ms, measured by Redis's clock."""
    a, b = pair
    limit = RateLimit("r", 4, 1, 2)
    assert [await spend(a, [limit]) for _ in range(3)] == [True, True, False]
    await asyncio.sleep(0.3)
    assert await spend(b, [limit])
    assert not await spend(a, [limit])


async def test_a_skewed_gateway_clock_changes_nothing(
    pair: tuple[RedisLimiter, RedisLimiter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance B's clock an hour ahead (time.time and time.time_ns): it neither refills the
    budget A spent nor spends it for the future; the script reads Redis `TIME` only."""
    a, b = pair
    assert [await spend(a, [MINUTE]) for _ in range(10)] == [True] * 10
    ahead = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: ahead)
    monkeypatch.setattr(time, "time_ns", lambda: int(ahead * 1e9))
    assert not await spend(b, [MINUTE])
    outcome = await b.check(["m:k:apk_1"], [MINUTE], 1)
    assert 0 < outcome.reported.retry_us <= 6_000_000  # seconds, not an hour


async def test_a_flushed_script_cache_is_reloaded(
    pair: tuple[RedisLimiter, RedisLimiter], redis_url: str
) -> None:
    """EVALSHA after SCRIPT FLUSH (a restarted Redis) falls back to EVAL and still counts."""
    a, _ = pair
    assert await spend(a, [MINUTE])
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    outcome = await a.check(["m:k:apk_1"], [MINUTE], 1)
    assert outcome.allowed
    assert outcome.reported.remaining == 8
    assert not a.degraded


async def test_heartbeats_count_the_live_instances(
    pair: tuple[RedisLimiter, RedisLimiter],
) -> None:
    """Each instance announces itself; both then see two live instances."""
    a, b = pair
    await a.beat()
    await b.beat()
    await a.beat()
    assert (a.live_instances, b.live_instances) == (2, 2)


async def test_an_unreachable_redis_falls_back_to_a_share_never_unlimited() -> None:
    """Redis refusing connections: no error, the limit divided by the last known number of
    instances (here 2: five of `10/m`), then refused."""
    limiter = RedisLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0", namespace="kgdead", deadline=0.3
    )
    limiter.live_instances = 2
    try:
        results = [await spend(limiter, [MINUTE]) for _ in range(8)]
    finally:
        await limiter.close()
    assert results == [True] * 5 + [False] * 3
    assert limiter.degraded


async def test_a_hung_redis_costs_one_deadline_then_the_fallback_answers_at_once() -> None:
    """Redis stopped (SIGSTOP): the first check waits out the deadline and falls back; the
    next ones answer from the fallback without waiting, and `check_now` serves them with no
    I/O; after the back-off, a resumed Redis is used again."""
    with throwaway_redis() as server:
        limiter = RedisLimiter.from_url(server.url, namespace="kghung", deadline=0.3)
        try:
            assert await spend(limiter, [MINUTE])
            with hung(server):
                started = time.monotonic()
                assert await spend(limiter, [MINUTE])
                assert time.monotonic() - started < 1.0
                started = time.monotonic()
                assert await spend(limiter, [MINUTE])
                assert time.monotonic() - started < 0.05
                assert limiter.check_now(["m:k:apk_1"], [MINUTE], 1) is not None
            await asyncio.sleep(1.1)  # the back-off
            assert limiter.check_now(["m:k:apk_1"], [MINUTE], 1) is None
            outcome = await limiter.check(["m:k:apk_1"], [MINUTE], 1)
            assert not limiter.degraded
            # Redis's own count: one before and this one; the call that timed out during the
            # hang was in Redis's socket and may run once it resumes: spending one more, which
            # errs on the refusing side, never granting.
            assert outcome.reported.remaining in (7, 8)
        finally:
            await limiter.close()


@contextlib.contextmanager
def redis_on(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of the test's own on `port`, without persistence: a restart forgets."""
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


async def test_credits_survive_a_redis_restart_within_the_write_behind_bound(
    services: Services,
) -> None:
    """Credits live in Redis and are written behind to the store: after a Redis restart (no
    persistence, so Redis forgets everything) the balance is reloaded from the store, neither
    reset to its start nor more than the units spent since the last write-behind."""
    owner = await services.users.create(
        email="c@example.com", password=None, actor="test", is_service=True
    )
    key = await services.keys.create(owner=owner, creator=None, label="c", permissions=[])
    key_id = key.record.id
    await services.store.set_quota(KeyQuota(key_id, credits=10), Audit("test", "key.quota", "k"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with redis_on(port):
        limiter = RedisLimiter.from_url(url, namespace="kgcr", deadline=0.5, store=services.store)
        try:
            assert [(await limiter.check([], [], 1, key_id)).allowed for _ in range(4)] == [
                True
            ] * 4
            await limiter.flush()  # the store now holds 6
            assert (await limiter.check([], [], 2, key_id)).credits == CreditState(
                True, 4, None, None
            )
        finally:
            await limiter.close()
    stored = await services.store.get_quota(key_id)
    assert stored is not None
    assert stored.credits == 6
    with redis_on(port):  # the same Redis, restarted empty
        limiter = RedisLimiter.from_url(url, namespace="kgcr", deadline=0.5, store=services.store)
        try:
            outcome = await limiter.check([], [], 1, key_id)
            # Reloaded from the store: 6 (not 10), so the 2 spent after the last write-behind
            # are granted again: the documented bound. Then the balance runs out for good.
            assert outcome.credits == CreditState(True, 5, None, None)
            spent = [(await limiter.check([], [], 1, key_id)).allowed for _ in range(6)]
            assert spent == [True] * 5 + [False]
            await limiter.flush()
        finally:
            await limiter.close()
    stored = await services.store.get_quota(key_id)
    assert stored is not None
    assert stored.credits == 0


async def test_an_administrators_change_wins_over_a_write_behind(
    services: Services, redis_url: str
) -> None:
    """Credits set while an instance holds an older balance in Redis: its write-behind finds
    the stored version moved on, writes nothing, and drops the Redis copy; the next request
    spends from the new balance."""
    owner = await services.users.create(
        email="d@example.com", password=None, actor="test", is_service=True
    )
    key = await services.keys.create(owner=owner, creator=None, label="d", permissions=[])
    key_id = key.record.id
    await services.store.set_quota(KeyQuota(key_id, credits=10), Audit("test", "key.quota", "k"))
    limiter = RedisLimiter.from_url(
        redis_url, namespace=f"kg{uuid.uuid4().hex[:6]}", deadline=0.5, store=services.store
    )
    try:
        assert (await limiter.check([], [], 3, key_id)).allowed
        # another instance's administrator: store only (this limiter's Redis copy stays)
        await services.store.set_quota(KeyQuota(key_id, credits=100), Audit("t", "key.quota", "k"))
        await limiter.flush()
        stored = await services.store.get_quota(key_id)
        assert stored is not None
        assert stored.credits == 100
        outcome = await limiter.check([], [], 1, key_id)
        assert outcome.credits is not None
        assert outcome.credits.balance == 99
    finally:
        await limiter.close()


async def test_credits_and_limits_are_one_atomic_decision(
    services: Services, redis_url: str
) -> None:
    """Racing for the last credits from two instances with a limit on top: exactly the
    balance is spent, never more; a limit's refusal spends no credit."""
    namespace = f"kg{uuid.uuid4().hex[:6]}"
    a, b = (
        RedisLimiter.from_url(redis_url, namespace=namespace, deadline=2.0, store=services.store)
        for _ in range(2)
    )
    try:
        await _race(a, b, services)
    finally:
        await a.close()
        await b.close()


async def _race(a: RedisLimiter, b: RedisLimiter, services: Services) -> None:
    owner = await services.users.create(
        email="e@example.com", password=None, actor="test", is_service=True
    )
    key = await services.keys.create(owner=owner, creator=None, label="e", permissions=[])
    key_id = key.record.id
    await services.store.set_quota(KeyQuota(key_id, credits=7), Audit("test", "key.quota", "k"))
    wide = RateLimit("wide", 1000, 60, 1000)
    results = await asyncio.gather(
        *((a if i % 2 else b).check(["wide:k:x"], [wide], 1, key_id) for i in range(60))
    )
    assert sum(r.allowed for r in results) == 7
    assert not a.degraded
    assert not b.degraded
    narrow = RateLimit("narrow", 1, 60, 1)
    await services.store.set_quota(KeyQuota(key_id, credits=5), Audit("test", "key.quota", "k"))
    await a.forget(key_id)
    assert (await a.check(["narrow:k:y"], [narrow], 1, key_id)).allowed
    refused = await b.check(["narrow:k:y"], [narrow], 1, key_id)
    assert not refused.allowed
    assert refused.credits is not None
    assert refused.credits.balance == 4  # the refusal spent none


@pytest.fixture
async def leasing(redis_url: str) -> AsyncIterator[tuple[RedisLimiter, RedisLimiter]]:
    """Two engines on one namespace that lease up to 50 requests at a time, each knowing of
    two live instances."""
    namespace = f"kgtest{uuid.uuid4().hex[:8]}"
    pair = tuple(
        RedisLimiter.from_url(redis_url, namespace=namespace, deadline=2.0, lease=50)
        for _ in range(2)
    )
    for limiter in pair:
        limiter.live_instances = 2
    yield pair  # type: ignore[misc]
    for limiter in pair:
        await limiter.close()


BIG = RateLimit("big", 400, 86_400, 400)  # refills one unit in 216 s: none during a test


async def answer(limiter: RedisLimiter, limits: list[RateLimit]) -> bool:
    buckets = [f"{limit.name}:k:apk_1" for limit in limits]
    outcome = limiter.check_now(buckets, limits, 1)
    if outcome is None:
        outcome = await limiter.check(buckets, limits, 1)
    return outcome.allowed


async def test_leases_never_exceed_the_budget_and_refuse_early_by_at_most_a_share(
    leasing: tuple[RedisLimiter, RedisLimiter],
) -> None:
    """`400/d` with leases of up to 50 (400 / (4 x 2 instances)): alternating 600 requests
    allow at most 400, and at least 400 less what both instances may hold unused (each at
    most 12 of one lease and a whole renewal: 2 x 62)."""
    a, b = leasing
    allowed = sum([await answer(a if i % 2 else b, [BIG]) for i in range(600)])
    assert 400 - 2 * 62 <= allowed <= 400


async def test_leases_racing_never_exceed_the_budget(
    leasing: tuple[RedisLimiter, RedisLimiter],
) -> None:
    """A thousand concurrent requests on both leasing instances: at most 400 pass."""
    a, b = leasing
    results = await asyncio.gather(*(answer(a if i % 2 else b, [BIG]) for i in range(1000)))
    assert not a.degraded
    assert not b.degraded
    assert 400 - 2 * 62 <= sum(results) <= 400


async def test_a_lease_is_spent_from_memory_then_renewed(
    leasing: tuple[RedisLimiter, RedisLimiter],
) -> None:
    """One Redis call takes 50; the next 49 answer with no I/O (`check_now`); the one after
    needs Redis again. A small burst (`10/m`: 10 / (4 x 2) < 2) never leases."""
    a, _ = leasing
    bucket = ["big:k:apk_9"]
    assert a.check_now(bucket, [BIG], 1) is None
    first = await a.check(bucket, [BIG], 1)
    assert first.allowed
    assert first.reported is not None
    assert first.reported.remaining == 399
    served = [a.check_now(bucket, [BIG], 1) for _ in range(49)]
    assert all(o is not None and o.allowed for o in served)
    assert a.check_now(bucket, [BIG], 1) is None
    small = RateLimit("small", 10, 60, 10)
    assert (await a.check(["small:k:apk_9"], [small], 1)).allowed
    assert a.check_now(["small:k:apk_9"], [small], 1) is None


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seconds=st.integers(0, 4_102_444_800), kind=st.sampled_from(["daily", "monthly", ""]))
async def test_the_scripts_refill_periods_match_python(
    redis_url: str, seconds: int, kind: str
) -> None:
    """The Lua period (day or month number, UTC) equals `credits.period_of` for any time up
    to 2100, month ends and leap days included."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        lua = PERIOD_LUA + "return period(ARGV[1], tonumber(ARGV[2]))"
        answer = (await client.eval(lua, 0, kind, seconds)).decode()
    finally:
        await client.aclose()
    assert answer == (period_of(kind or None, seconds) or "")


async def test_credits_on_the_fallback_spend_a_share_of_the_stored_balance(
    services: Services,
) -> None:
    """Redis unreachable: a key's credits are read from the store and this instance (one of
    two live ones) may spend half of them, then 429 `quota-exhausted`; never unlimited."""
    owner = await services.users.create(
        email="f@example.com", password=None, actor="test", is_service=True
    )
    key = await services.keys.create(owner=owner, creator=None, label="f", permissions=[])
    key_id = key.record.id
    await services.store.set_quota(KeyQuota(key_id, credits=6), Audit("test", "key.quota", "k"))
    limiter = RedisLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0", namespace="kgdead", deadline=0.3, store=services.store
    )
    limiter.live_instances = 2
    try:
        results = [(await limiter.check([], [], 1, key_id)) for _ in range(4)]
    finally:
        await limiter.close()
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[-1].credits is not None
    assert results[-1].credits.balance == 0

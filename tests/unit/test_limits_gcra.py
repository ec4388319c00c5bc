"""GCRA over several limits, the in-process engine, and the rate-limit fields' syntax."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from gateway.limits.engine import LocalLimiter, divided
from gateway.limits.gcra import gcra
from gateway.limits.headers import limit_fields, policy_value
from gateway.limits.model import RateLimit

SECOND = 1_000_000
T0 = 1_700_000_000 * SECOND


def run(limiter: LocalLimiter, limits: list[RateLimit], cost: int = 1) -> bool:
    buckets = [f"{limit.name}:k:1" for limit in limits]
    return limiter.check_now(buckets, limits, cost).allowed


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def test_a_burst_passes_then_the_rate_refills() -> None:
    """`10/s burst 5`: five at once, the sixth refused, one more every 100 ms."""
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    limit = RateLimit("b", 10, 1, 5)
    assert [run(limiter, [limit]) for _ in range(6)] == [True] * 5 + [False]
    clock.now += 99_000
    assert not run(limiter, [limit])
    clock.now += 1_000
    assert run(limiter, [limit])
    assert not run(limiter, [limit])
    clock.now += 10 * SECOND
    assert [run(limiter, [limit]) for _ in range(6)] == [True] * 5 + [False]


def test_every_limit_must_pass_and_a_refusal_spends_nothing() -> None:
    """With two limits, the tighter refuses, and the looser one is not charged for it."""
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    loose, tight = RateLimit("loose", 3, 60, 3), RateLimit("tight", 1, 60, 1)
    assert run(limiter, [loose, tight])
    outcome = limiter.check_now(["loose:k:1", "tight:k:1"], [loose, tight], 1)
    assert not outcome.allowed
    assert outcome.reported.limit is tight
    loose_state = next(s for s in outcome.states if s.limit is loose)
    assert loose_state.allowed
    assert loose_state.remaining == 2
    # the loose limit alone still has exactly two left
    assert [run(limiter, [loose]) for _ in range(3)] == [True, True, False]


def test_cost_spends_several_units_and_zero_is_free() -> None:
    """A cost of 3 takes three units; a cost of 0 always passes and spends nothing."""
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    limit = RateLimit("c", 5, 60, 5)
    assert run(limiter, [limit], 3)
    assert not run(limiter, [limit], 3)
    assert all(run(limiter, [limit], 0) for _ in range(100))
    assert run(limiter, [limit], 2)
    assert not run(limiter, [limit], 1)


@given(
    count=st.integers(1, 50),
    period=st.integers(1, 100),
    burst=st.integers(1, 50),
    steps=st.lists(st.tuples(st.integers(0, 3 * SECOND), st.integers(0, 4)), max_size=200),
)
def test_never_more_allowed_than_the_budget(
    count: int, period: int, burst: int, steps: list[tuple[int, int]]
) -> None:
    """Over any run of requests, the units allowed from the start never exceed the burst plus
    what the rate refilled since: GCRA's guarantee, with costs and idle gaps."""
    limit = RateLimit("p", count, period, burst)
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    spent = 0
    for gap, cost in steps:
        clock.now += gap
        if limiter.check_now(["p:k:1"], [limit], cost).allowed:
            spent += cost
        elapsed = clock.now - T0
        assert spent <= burst + elapsed // limit.interval_us


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=4), st.integers(0, 5))
def test_reported_state_is_consistent(tats: list[int], cost: int) -> None:
    """Remaining units are never above the burst, waits are never negative, and a refused
    decision names a refusing limit."""
    limits = [RateLimit(f"l{i}", 3 + i, 10, 5 + i) for i in range(len(tats))]
    now = T0
    outcome = gcra([now + t for t in tats], limits, cost, now)
    for state in outcome.states:
        assert state.remaining <= state.limit.burst
        assert state.reset_us >= 0
        assert state.retry_us >= 0
    assert outcome.allowed == all(s.allowed for s in outcome.states)
    assert outcome.reported.allowed == outcome.allowed
    assert (outcome.new_tats is None) == (not outcome.allowed)


def test_divided_limits_share_a_budget_between_instances() -> None:
    """The fallback share of one of three instances: a third of the rate and of the burst."""
    share = divided(RateLimit("d", 90, 60, 30), 3)
    assert (share.count, share.burst, share.period) == (30, 10, 60)
    assert divided(RateLimit("d", 2, 60, 1), 5).count == 1  # never zero: never unlimited


SF_ITEM = re.compile(r'^"[a-z0-9_-]+"(;[a-z]+=[0-9]+)+$')


def test_fields_follow_the_drafts_structured_syntax() -> None:
    """RateLimit-Policy lists every limit, RateLimit names the most restrictive, as
    sf-list items `"name";q=..;w=..` and `"name";r=..;t=..`; legacy fields on request."""
    limits = [RateLimit("fast", 100, 1, 200), RateLimit("daily", 1000, 86_400, 1000)]
    value = policy_value(limits)
    assert value == '"fast";q=100;w=1, "daily";q=1000;w=86400'
    assert all(SF_ITEM.match(item) for item in value.split(", "))
    outcome = gcra([None, T0 + 900 * limits[1].interval_us], limits, 1, T0)
    fields = dict(limit_fields(value, outcome.reported, legacy=True))
    assert fields["RateLimit"] == '"daily";r=99;t=77847'  # 901 intervals of 86.4 s, up
    assert fields["RateLimit-Policy"] == value
    assert fields["X-RateLimit-Limit"] == "1000"
    assert set(fields) == {
        "RateLimit",
        "RateLimit-Policy",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    }
    assert "X-RateLimit-Limit" not in dict(limit_fields(value, outcome.reported, legacy=False))

"""The failed-key budget per client address (gateway/keys/budget.py): pure, on a fake clock."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import TooManyRequests
from gateway.keys.budget import KeyBudget, wait_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget(limit: int = 3, window: float = 60.0, max_tracked: int = 100) -> tuple[KeyBudget, Clock]:
    clock = Clock()
    return KeyBudget(
        limit=limit, window_seconds=window, max_tracked=max_tracked, clock=clock
    ), clock


# -- the window arithmetic ----------------------------------------------------------------------

times = st.floats(min_value=0, max_value=1e6, allow_nan=False)
windows = st.floats(min_value=1, max_value=1e5, allow_nan=False)


@given(
    started=times,
    elapsed=st.floats(min_value=0, max_value=2e5, allow_nan=False),
    failures=st.integers(0, 50),
    limit=st.integers(1, 30),
    window=windows,
)
def test_wait_is_zero_exactly_when_under_the_limit_or_past_the_window(
    started: float, elapsed: float, failures: int, limit: int, window: float
) -> None:
    """No wait under the limit or once the window is over; otherwise at least one second."""
    now = started + elapsed
    wait = wait_seconds(started, failures, now, limit=limit, window=window)
    open_window = now - started < window
    if failures < limit or not open_window:
        assert wait == 0
    else:
        assert wait >= 1


@given(
    started=times,
    elapsed=st.floats(min_value=0, max_value=2e5, allow_nan=False),
    failures=st.integers(1, 50),
    window=windows,
)
def test_waiting_retry_after_always_reaches_the_end_of_the_window(
    started: float, elapsed: float, failures: int, window: float
) -> None:
    """Retry-After is rounded up: waiting it (and the microsecond its answer takes to arrive)
    ends the window, it is under a second too long, and never longer than the window."""
    now = started + elapsed
    wait = wait_seconds(started, failures, now, limit=1, window=window)
    if wait:
        assert wait - 1 < window - (now - started)
        assert wait <= math.ceil(window)
        later = now + wait + 1e-6
        assert wait_seconds(started, failures, later, limit=1, window=window) == 0


# -- the budget -------------------------------------------------------------------------------


def test_limit_failures_then_429_naming_the_wait() -> None:
    """After `limit` failures the address is refused with too-many-failed-keys and Retry-After."""
    keys, clock = budget(limit=3, window=60)
    for _ in range(3):
        assert keys.charge("198.51.100.7") is None
    clock.now += 10
    over = keys.refusal("198.51.100.7")
    assert isinstance(over, TooManyRequests)
    assert (over.status, over.code) == (429, "too-many-failed-keys")
    assert over.headers == {"Retry-After": "50"}
    assert keys.charge("198.51.100.7") is not None


def test_other_addresses_keep_their_own_budget() -> None:
    """One address over budget leaves every other address untouched."""
    keys, _ = budget(limit=2)
    for _ in range(5):
        keys.charge("203.0.113.1")
    assert keys.retry_after("203.0.113.1") > 0
    assert keys.retry_after("203.0.113.2") == 0
    assert keys.charge("203.0.113.2") is None


def test_the_address_may_try_again_after_the_window() -> None:
    """Once the window opened by the first failure has passed, the address starts afresh."""
    keys, clock = budget(limit=2, window=30)
    keys.charge("192.0.2.9")
    clock.now += 20
    keys.charge("192.0.2.9")
    assert keys.retry_after("192.0.2.9") == 10
    clock.now += 10
    assert keys.retry_after("192.0.2.9") == 0
    assert keys.charge("192.0.2.9") is None
    assert keys.charge("192.0.2.9") is None  # a new window: two more before the next 429
    assert keys.retry_after("192.0.2.9") == 30


def test_asking_never_creates_an_entry() -> None:
    """Checking an address that never failed stores nothing (only failures cost memory)."""
    keys, _ = budget()
    for n in range(50):
        assert keys.retry_after(f"10.0.0.{n}") == 0
        assert keys.refusal(f"10.0.0.{n}") is None
    assert len(keys) == 0


def test_expired_windows_are_swept_as_new_failures_arrive() -> None:
    """Windows that are over are dropped from the front when another failure is counted."""
    keys, clock = budget(window=10)
    for n in range(20):
        keys.failed(f"10.0.0.{n}")
    clock.now += 11
    keys.failed("10.0.1.1")
    assert len(keys) == 1


def test_a_flood_from_many_addresses_is_capped_dropping_the_oldest_window() -> None:
    """At max_tracked, the window that started first (the nearest to expiring) goes."""
    keys, clock = budget(limit=1, max_tracked=10)
    keys.failed("192.0.2.1")
    for n in range(100):
        clock.now += 0.01
        keys.failed(f"10.0.{n // 250}.{n % 250}")
        assert len(keys) <= 10
    assert keys.retry_after("192.0.2.1") == 0
    assert keys.retry_after("10.0.0.99") > 0


events = st.lists(
    st.tuples(st.integers(0, 4), st.floats(min_value=0, max_value=20, allow_nan=False)),
    max_size=200,
)


@given(events=events, limit=st.integers(1, 6), window=st.floats(min_value=1, max_value=50))
def test_charges_follow_fixed_windows(
    events: list[tuple[int, float]], limit: int, window: float
) -> None:
    """Against a trace of failures: a refusal only follows `limit` admitted failures within the
    window; at most `limit` are admitted per window (so at most 2 x limit in any span of
    `window` seconds); Retry-After is honest."""
    keys, clock = budget(limit=limit, window=window, max_tracked=5)  # one per address
    admitted: dict[int, list[float]] = {}
    for address, delay in events:
        clock.now += delay
        now = clock.now
        name = f"10.0.0.{address}"
        recent = [t for t in admitted.get(address, []) if now - t < window]
        over = keys.charge(name)
        assert len(keys) <= 5
        if over is None:
            admitted.setdefault(address, []).append(now)
            since = [t for t in admitted[address] if t > now - window]
            assert len(since) <= 2 * limit
        else:
            assert len(recent) >= limit  # refused only after `limit` within the window
            wait = int(over.headers["Retry-After"])
            assert 1 <= wait <= math.ceil(window)
            clock.now = now + wait + 1e-6
            assert keys.retry_after(name) == 0  # waiting Retry-After always suffices
            clock.now = now

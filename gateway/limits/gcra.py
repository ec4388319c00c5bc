"""GCRA over several limits at once: pure arithmetic on integers (microseconds), no clock.

`gcra(tats, limits, cost, now)` is the whole decision: every limit must pass, and when one
does not, nothing is consumed on any (a refused request spends no budget). The Redis script
(limits/redis_engine.py) is this function written in Lua, run atomically inside Redis with
Redis's own clock; the in-process engine calls this directly. Tests hold the two to the same
answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from gateway.limits.model import RateLimit


class LimitState(NamedTuple):
    """One limit after a decision: `remaining` units, microseconds until it is full again
    (`reset_us`) and, when it refused, until the request's cost would pass (`retry_us`)."""

    limit: RateLimit
    allowed: bool
    remaining: int
    reset_us: int
    retry_us: int


class Outcome(NamedTuple):
    """The decision: whether every limit passed, the limits' states, and the TATs to store
    (None when refused: nothing is written)."""

    allowed: bool
    states: tuple[LimitState, ...]
    new_tats: tuple[int, ...] | None

    @property
    def reported(self) -> LimitState:
        """The most restrictive limit: the refusing one with the longest wait, else the one
        with the fewest units left."""
        return reported(self.states)


def gcra(tats: Sequence[int | None], limits: Sequence[RateLimit], cost: int, now: int) -> Outcome:
    """Decide a request of `cost` at `now` (µs) against `limits` whose stored TATs are `tats`
    (None: never used)."""
    states: list[LimitState] = []
    news: list[int] = []
    allowed = True
    for stored, limit in zip(tats, limits, strict=True):
        interval, tolerance = limit.interval_us, limit.tolerance_us
        tat = now if stored is None or stored < now else stored
        new = tat + cost * interval
        if new - now <= tolerance:
            states.append(
                LimitState(limit, True, (tolerance - (new - now)) // interval, new - now, 0)
            )
        else:
            allowed = False
            left = (tolerance - (tat - now)) // interval
            states.append(LimitState(limit, False, left, tat - now, new - now - tolerance))
        news.append(new)
    if not allowed:
        # The limits that would have passed did not spend anything either: report them as
        # they stand.
        states = [s if not s.allowed else _unspent(s, cost) for s in states]
        return Outcome(False, tuple(states), None)
    return Outcome(True, tuple(states), tuple(news))


def _unspent(state: LimitState, cost: int) -> LimitState:
    interval = state.limit.interval_us
    return state._replace(
        remaining=state.remaining + cost, reset_us=max(0, state.reset_us - cost * interval)
    )


def reported(states: Sequence[LimitState]) -> LimitState:
    refused = [s for s in states if not s.allowed]
    if refused:
        return max(refused, key=lambda s: s.retry_us)
    return min(states, key=lambda s: (s.remaining, -s.reset_us))

"""GCRA over several limits at once, with a key's credits: pure arithmetic on integers
(microseconds), no clock.

`gcra(tats, limits, cost, now, credits=...)` is the whole decision: every limit must pass,
and the credits (when the key spends any) must cover the cost; when one does not, nothing is
consumed anywhere (a refused request spends no budget). The Redis script
(limits/redis_engine.py) is this function written in Lua, run atomically inside Redis with
Redis's own clock; the in-process engine calls this directly. Tests hold the two to the same
answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from gateway.limits.credits import CreditState
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
    """The decision: whether every limit and the credits passed, the limits' states, the TATs
    to store (None when refused: nothing is written) and the credits' state (None: the key
    spends none). A refused outcome reports every state as it stands, unspent."""

    allowed: bool
    states: tuple[LimitState, ...]
    new_tats: tuple[int, ...] | None
    credits: CreditState | None = None

    @property
    def reported(self) -> LimitState | None:
        """The most restrictive limit: the refusing one with the longest wait, else the one
        with the fewest units left; None without limits."""
        return reported(self.states) if self.states else None


def gcra(
    tats: Sequence[int | None],
    limits: Sequence[RateLimit],
    cost: int,
    now: int,
    credits: CreditState | None = None,
) -> Outcome:
    """Decide a request of `cost` at `now` (µs) against `limits` whose stored TATs are `tats`
    (None: never used), and `credits` as they would stand after paying (if they could)."""
    states: list[LimitState] = []
    news: list[int] = []
    allowed = True
    for stored, limit in zip(tats, limits, strict=True):
        interval, tolerance = limit.interval_us, limit.tolerance_us
        tat = now if stored is None or stored < now else stored
        new = tat + cost * interval
        if new - now <= tolerance:
            left = (tolerance - (new - now)) // interval
            states.append(LimitState(limit, True, left, new - now, 0))
        else:
            allowed = False
            left = (tolerance - (tat - now)) // interval
            states.append(LimitState(limit, False, left, tat - now, new - now - tolerance))
        news.append(new)
    if allowed and (credits is None or credits.allowed):
        return Outcome(True, tuple(states), tuple(news), credits)
    # Refused: what passed spent nothing either; report it as it stands.
    unspent = tuple(s if not s.allowed else _unspent(s, cost) for s in states)
    if credits is not None and credits.allowed:
        credits = credits._replace(balance=credits.balance + cost)
    return Outcome(False, unspent, None, credits)


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

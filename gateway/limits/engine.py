"""Where limit state lives: the `Limiter` protocol and the in-process engine.

A request's limits are checked as one decision (`gcra.gcra`): every limit must pass, and a
refusal spends nothing. `check_now` answers without I/O when it can (the in-process engine
always can); otherwise the caller awaits `check`. Buckets are named `<limit>:<subject>`
(`standard:k:apk_...`, `pool:o:<user id>`, `anon:a:127.0.0.1`), so one named limit is one
budget per subject across every route that carries it.

`LocalLimiter` is the embedded default (no Redis): exact within one process, so N workers or
instances allow N times each limit. It is also the fallback of the shared engine while Redis
is unreachable, with each limit divided by the number of live instances (`divisor`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.limits.gcra import Outcome, gcra
from gateway.limits.model import RateLimit

MAX_BUCKETS = 200_000


def now_us() -> int:
    return time.time_ns() // 1000


class Limiter(Protocol):
    def check_now(
        self, buckets: Sequence[str], limits: Sequence[RateLimit], cost: int
    ) -> Outcome | None: ...

    async def check(
        self, buckets: Sequence[str], limits: Sequence[RateLimit], cost: int
    ) -> Outcome: ...


def divided(limit: RateLimit, by: int) -> RateLimit:
    """A limit's share on one of `by` instances: the rate and the burst divided (at least 1
    unit), so the instances together allow at most about the limit."""
    if by <= 1:
        return limit
    return RateLimit(
        limit.name,
        max(1, limit.count // by),
        limit.period,
        max(1, limit.burst // by),
        limit.scope,
    )


class LocalLimiter:
    """GCRA state in a dict, oldest buckets dropped beyond `max_buckets` (a dropped bucket
    had not been touched for longest; forgetting it can only grant its subject a fresh
    burst)."""

    def __init__(
        self,
        *,
        clock: Callable[[], int] = now_us,
        divisor: Callable[[], int] | None = None,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self._clock = clock
        self._divisor = divisor
        self._max = max_buckets
        self._tats: OrderedDict[str, int] = OrderedDict()
        self._shares: dict[tuple[RateLimit, int], RateLimit] = {}

    def check_now(self, buckets: Sequence[str], limits: Sequence[RateLimit], cost: int) -> Outcome:
        if self._divisor is not None:
            limits = self._share(limits, self._divisor())
        tats = self._tats
        outcome = gcra([tats.get(b) for b in buckets], limits, cost, self._clock())
        if outcome.new_tats is not None and cost:
            for bucket, tat in zip(buckets, outcome.new_tats, strict=True):
                tats[bucket] = tat
                tats.move_to_end(bucket)
            while len(tats) > self._max:
                tats.popitem(last=False)
        return outcome

    async def check(
        self, buckets: Sequence[str], limits: Sequence[RateLimit], cost: int
    ) -> Outcome:
        return self.check_now(buckets, limits, cost)

    def _share(self, limits: Sequence[RateLimit], by: int) -> list[RateLimit]:
        shares = self._shares
        out = []
        for limit in limits:
            share = shares.get((limit, by))
            if share is None:
                if len(shares) > 10_000:
                    shares.clear()
                share = shares[(limit, by)] = divided(limit, by)
            out.append(share)
        return out

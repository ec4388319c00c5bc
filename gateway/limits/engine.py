"""Where limit state lives: the `Limiter` protocol and the in-process engine.

A request's limits and credits are checked as one decision (`gcra.gcra`): every limit must
pass and the credits must cover the cost, and a refusal spends nothing. `check_now` answers
without I/O when it can (the in-process engine can once the key's balance is loaded);
otherwise the caller awaits `check`. Buckets are named `<limit>:<subject>`
(`standard:k:apk_...`, `pool:o:<user id>`, `anon:a:127.0.0.1`), so one named limit is one
budget per subject across every route that carries it.

`LocalLimiter` is the embedded default (no Redis): exact within one process, so N workers or
instances allow N times each limit. It is also the fallback of the shared engine while Redis
is unreachable, with each limit divided by the number of live instances (`divisor`).
Credits: the balance is loaded from the store on first use and written back (write-behind)
by `flush`, every FLUSH_SECONDS from the serving instance's background tasks.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.limits import credits as credit_rules
from gateway.limits.gcra import Outcome, gcra
from gateway.limits.model import RateLimit
from gateway.store.base import KeyQuota

log = logging.getLogger("gateway.limits")

MAX_BUCKETS = 200_000
# A balance spent here reaches the store within this; the bound on what a crash (or, with
# Redis, a Redis restart) can give back.
FLUSH_SECONDS = 1.0


def now_us() -> int:
    return time.time_ns() // 1000


class QuotaStore(Protocol):
    """What the engines need of the store (gateway/store/sql_quotas.py)."""

    async def get_quota(self, key_id: str) -> KeyQuota | None: ...

    async def save_balance(
        self, key_id: str, credits: int, period: str | None, version: int
    ) -> bool: ...

    async def spend_balance(self, key_id: str, amount: int, version: int) -> bool: ...


class Limiter(Protocol):
    def check_now(
        self,
        buckets: Sequence[str],
        limits: Sequence[RateLimit],
        cost: int,
        account: str | None = None,
    ) -> Outcome | None: ...

    async def check(
        self,
        buckets: Sequence[str],
        limits: Sequence[RateLimit],
        cost: int,
        account: str | None = None,
    ) -> Outcome: ...

    async def forget(self, account: str) -> None:
        """Drop a cached balance (an administrator changed it in the store)."""
        ...

    async def flush(self) -> None:
        """Write spent balances to the store (write-behind)."""
        ...

    async def balance(self, account: str) -> int | None:
        """The live balance the engine holds for a key; None if it holds none."""
        ...


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


@dataclass(slots=True)
class Balance:
    """A key's credits as this process holds them."""

    credits: int
    period: str | None
    quota: KeyQuota


class LocalLimiter:
    """GCRA state in a dict, oldest buckets dropped beyond `max_buckets` (a dropped bucket
    had not been touched for longest; forgetting it can only grant its subject a fresh
    burst)."""

    def __init__(
        self,
        *,
        store: QuotaStore | None = None,
        clock: Callable[[], int] = now_us,
        divisor: Callable[[], int] | None = None,
        max_buckets: int = MAX_BUCKETS,
        write_behind: bool = True,
        ledger: dict[str, int] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._divisor = divisor
        self._max = max_buckets
        self._write_behind = write_behind
        self._ledger = ledger  # credits paid per key, for a caller that writes them back
        self._tats: OrderedDict[str, int] = OrderedDict()
        self._shares: dict[tuple[RateLimit, int], RateLimit] = {}
        self._balances: dict[str, Balance | None] = {}
        self._dirty: set[str] = set()

    def check_now(
        self,
        buckets: Sequence[str],
        limits: Sequence[RateLimit],
        cost: int,
        account: str | None = None,
    ) -> Outcome | None:
        now = self._clock()
        paid = None
        balance = None
        if account is not None:
            if account not in self._balances:
                return None  # to be loaded by `check`
            balance = self._balances[account]
            if balance is not None:
                paid = self._pay(balance, cost, now // 1_000_000)
        if self._divisor is not None:
            limits = self._share(limits, self._divisor())
        tats = self._tats
        outcome = gcra([tats.get(b) for b in buckets], limits, cost, now, paid)
        if outcome.allowed:
            if outcome.new_tats is not None and cost:
                for bucket, tat in zip(buckets, outcome.new_tats, strict=True):
                    tats[bucket] = tat
                    tats.move_to_end(bucket)
                while len(tats) > self._max:
                    tats.popitem(last=False)
            if paid is not None and balance is not None and account is not None:
                balance.credits, balance.period = paid.balance, paid.period
                if self._write_behind:
                    self._dirty.add(account)
                if self._ledger is not None and cost:
                    self._ledger[account] = self._ledger.get(account, 0) + cost
        return outcome

    def _pay(self, balance: Balance, cost: int, seconds: int) -> credit_rules.CreditState:
        quota = balance.quota
        by = self._divisor() if self._divisor is not None else 1
        return credit_rules.spend(
            balance.credits,
            balance.period,
            quota.refill,
            quota.refill_amount // max(1, by),
            quota.refill_mode,
            cost,
            seconds,
        )

    async def check(
        self,
        buckets: Sequence[str],
        limits: Sequence[RateLimit],
        cost: int,
        account: str | None = None,
    ) -> Outcome:
        if account is not None and account not in self._balances:
            await self.load(account)
        outcome = self.check_now(buckets, limits, cost, account)
        assert outcome is not None  # loaded just above
        return outcome

    async def load(self, account: str) -> None:
        """Read a key's balance from the store (None: it spends no credits)."""
        quota = await self._store.get_quota(account) if self._store is not None else None
        if quota is None or quota.credits is None:
            self._balances[account] = None
            return
        by = self._divisor() if self._divisor is not None else 1
        # A fallback share (`divisor`): this instance may spend 1/N of the stored balance.
        self._balances[account] = Balance(quota.credits // max(1, by), quota.period, quota)

    async def forget(self, account: str) -> None:
        self._balances.pop(account, None)
        self._dirty.discard(account)

    async def balance(self, account: str) -> int | None:
        held = self._balances.get(account)
        return held.credits if held is not None else None

    def held(self, account: str) -> Balance | None:
        """The balance this process holds for a key, if any."""
        return self._balances.get(account)

    async def flush(self) -> None:
        if self._store is None or not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for account in dirty:
            balance = self._balances.get(account)
            if balance is None:
                continue
            saved = await self._store.save_balance(
                account, balance.credits, balance.period, balance.quota.version
            )
            if not saved:  # changed by an administrator since: read it again
                self._balances.pop(account, None)

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

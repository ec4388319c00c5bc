"""A key's quota: its own rate limits and its credits, as the APIs, the CLI and the pages set
them. The checks are pure (`check_key_limits`, `check_credits`); `QuotaService` does the I/O.

A key's own limits are named limits of the policy, per key, and never looser than what the
policy allows its owner (`key_limits.max`, or `admin_max` for an administrator's key): a
limit is looser when its rate (count per period) or its burst is higher. Credits are set by
administrators only (the caller checks who is asking).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.limits.credits import period_of
from gateway.limits.engine import Limiter
from gateway.limits.model import MAX_COUNT, RateLimit
from gateway.store.base import Audit, KeyQuota, Refill, RefillMode, Store

MAX_KEY_LIMITS = 8
REFILLS: tuple[Refill, ...] = ("daily", "monthly")
MODES: tuple[RefillMode, ...] = ("replace", "add")


class QuotaError(ValueError):
    """A quota that cannot be set; the message says why (a 422 on the APIs)."""


def looser(limit: RateLimit, than: RateLimit) -> bool:
    """Whether `limit` allows more than `than`: a higher rate or a higher burst."""
    return limit.count * than.period > than.count * limit.period or limit.burst > than.burst


def check_key_limits(
    names: Sequence[object], named: Mapping[str, RateLimit], ceiling: RateLimit | None
) -> tuple[str, ...]:
    """A key's own limits: known, per key, at most MAX_KEY_LIMITS, none looser than `ceiling`."""
    if not names:
        return ()
    if ceiling is None:
        raise QuotaError("the policy lets keys carry no limits of their own (no key_limits)")
    if len(names) > MAX_KEY_LIMITS:
        raise QuotaError(f"at most {MAX_KEY_LIMITS} limits per key")
    out: dict[str, None] = {}
    for name in names:
        if not isinstance(name, str) or name not in named:
            known = ", ".join(sorted(n for n, lim in named.items() if lim.scope == "key"))
            raise QuotaError(f"unknown limit {name!r} (known: {known or 'none'})")
        limit = named[name]
        if limit.scope != "key":
            raise QuotaError(f"limit {name!r} is per {limit.scope}; a key's limit is per key")
        if looser(limit, ceiling):
            raise QuotaError(
                f"limit {name!r} ({limit}) is above what the owner's keys may carry "
                f"({ceiling.name}: {ceiling})"
            )
        out[name] = None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Credits:
    """Credits as an administrator sets them."""

    balance: int
    refill: Refill | None = None
    amount: int = 0
    mode: RefillMode = "replace"


def check_credits(
    balance: object, refill: object = None, amount: object = None, mode: object = None
) -> Credits:
    """Validate credits: whole numbers from 0 to MAX_COUNT, a known schedule and mode."""
    for what, value in (("balance", balance), ("refill amount", amount)):
        if value is None and what == "refill amount":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise QuotaError(f"credits {what} must be a whole number, got {value!r}")
        if not 0 <= value <= MAX_COUNT:
            raise QuotaError(f"credits {what} must be from 0 to {MAX_COUNT}, got {value}")
    if refill is not None and refill not in REFILLS:
        raise QuotaError(f"refill must be daily, monthly or null (never), got {refill!r}")
    if mode is not None and mode not in MODES:
        raise QuotaError(f"refill mode must be replace or add, got {mode!r}")
    if refill is not None and amount is None:
        raise QuotaError("a refill needs its amount")
    assert isinstance(balance, int)
    return Credits(
        balance,
        refill,
        amount if isinstance(amount, int) else 0,
        mode or "replace",
    )


_UNSET: object = object()


class QuotaService:
    """Reads and sets key quotas; a change reaches every instance through the key's
    invalidation (its limits) and the engine's `forget` (its balance)."""

    def __init__(self, store: Store, limiter: Limiter) -> None:
        self._store = store
        self._limiter = limiter

    async def get(self, key_id: str) -> KeyQuota | None:
        return await self._store.get_quota(key_id)

    async def balance(self, quota: KeyQuota | None) -> int | None:
        """The live balance: the engine's where it holds one (Redis, or this process), else
        the stored one."""
        if quota is None or quota.credits is None:
            return None
        live = await self._limiter.balance(quota.key_id)
        return quota.credits if live is None else live

    async def set(
        self,
        key_id: str,
        *,
        actor: str,
        limits: tuple[str, ...] | None = None,
        credits: Credits | object | None = _UNSET,
    ) -> KeyQuota:
        """Change a key's limits (checked by the caller) and/or credits (None: none)."""
        old = await self._store.get_quota(key_id) or KeyQuota(key_id)
        new = KeyQuota(
            key_id,
            old.limits if limits is None else limits,
            old.credits,
            old.refill,
            old.refill_amount,
            old.refill_mode,
            old.period,
        )
        detail: dict[str, object] = {}
        if limits is not None:
            detail["limits"] = list(limits)
        if credits is not _UNSET:
            if credits is None:
                new = KeyQuota(key_id, new.limits)
                detail["credits"] = None
            else:
                assert isinstance(credits, Credits)
                new = KeyQuota(
                    key_id,
                    new.limits,
                    credits.balance,
                    credits.refill,
                    credits.amount,
                    credits.mode,
                    period_of(credits.refill, int(time.time())),
                )
                detail["credits"] = credits.balance
                detail["refill"] = credits.refill
        saved = await self._store.set_quota(new, Audit(actor, "key.quota", f"key:{key_id}", detail))
        await self._limiter.forget(key_id)
        return saved

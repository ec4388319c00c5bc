"""Usage credits: a key's balance of units, spent by each request's cost, refilled on a
schedule. Pure: no I/O, no clock (the Redis script computes the same in Lua).

Refills are lazy: the balance remembers the refill period it belongs to (`d<day number>` or
`m<month number>`, in UTC from the Unix epoch); the first request in a later period refills
it first — `replace` sets the balance to the refill amount (unused credits expire), `add`
adds the amount (unused credits carry over). A key whose refill is None never refills.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

DAY = 86_400


def period_of(refill: str | None, seconds: int) -> str | None:
    """The refill period `seconds` (Unix time) falls in."""
    if refill == "daily":
        return f"d{seconds // DAY}"
    if refill == "monthly":
        moment = datetime.fromtimestamp(seconds, UTC)
        return f"m{moment.year * 12 + moment.month - 1}"
    return None


def next_refill(refill: str | None, seconds: int) -> int | None:
    """Seconds from `seconds` until the next refill; None when the key never refills."""
    if refill == "daily":
        return DAY - seconds % DAY
    if refill == "monthly":
        moment = datetime.fromtimestamp(seconds, UTC)
        year, month = divmod(moment.year * 12 + moment.month, 12)
        start = datetime(year, month + 1, 1, tzinfo=UTC)
        return int(start.timestamp()) - seconds
    return None


class CreditState(NamedTuple):
    """A balance after a request: whether it paid, what is left (or was, if it could not pay),
    the period the balance now belongs to, and seconds until the next refill (None: never)."""

    allowed: bool
    balance: int
    period: str | None
    retry_after: int | None


def spend(
    balance: int,
    period: str | None,
    refill: str | None,
    amount: int,
    mode: str,
    cost: int,
    seconds: int,
) -> CreditState:
    """Refill if a new period began, then pay `cost` if the balance covers it."""
    current = period_of(refill, seconds)
    if current is not None and current != period:
        balance = balance + amount if mode == "add" else amount
        period = current
    if balance < cost:
        return CreditState(False, balance, period, next_refill(refill, seconds))
    return CreditState(True, balance - cost, period, None)

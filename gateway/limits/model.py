"""Named rate limits: the values and their text form. Pure: no I/O, no clock.

A limit is written `COUNT/PERIOD [burst N] [per key|owner|address]`, for example::

    100/s burst 200          100 a second, up to 200 at once, per key (the default scope)
    1000/h                   1000 an hour; the burst defaults to the count
    5000/d per owner         one pool shared by every key of one user
    10/10s per address       per client address (what `auth: none` routes may carry)

PERIOD is a unit (`s`, `m`, `h`, `d`, or the words second, minute, hour, day), optionally
preceded by a whole multiple (`10s`, `5m`). Limits are enforced with GCRA (the generic cell
rate algorithm): one request of cost c moves the limit's theoretical arrival time (TAT) by
c * T, where T = period / count is the emission interval; a request is allowed while
TAT - now stays within burst * T. One stored number per limit and subject, exact, no window
edges (a fixed window lets 2x the count through across its boundary).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Scope = Literal["key", "owner", "address"]
SCOPES: tuple[Scope, ...] = ("key", "owner", "address")

# Bounds that keep every derived number exact in microseconds within a double (Lua's number):
# counts and bursts up to a billion, periods up to a year, costs up to a million.
MAX_COUNT = 1_000_000_000
MAX_PERIOD_SECONDS = 366 * 86_400
MAX_COST = 1_000_000
# The burst must refill within this (TATs then stay below 2**53 microseconds).
MAX_TOLERANCE_SECONDS = 10 * 366 * 86_400
LIMIT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86_400,
    "day": 86_400,
}
_RATE_RE = re.compile(r"^(?P<count>\S+?)\s*/\s*(?P<mult>\d*)\s*(?P<unit>[a-z]+)$")
_NUMBER_RE = re.compile(r"^[0-9]+\Z")


class LimitSyntaxError(ValueError):
    """A limit or cost that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One named limit: `count` units per `period` seconds, up to `burst` at once."""

    name: str
    count: int
    period: int  # seconds
    burst: int
    scope: Scope = "key"

    @property
    def interval_us(self) -> int:
        """The emission interval T in microseconds (at least 1)."""
        return max(1, self.period * 1_000_000 // self.count)

    @property
    def tolerance_us(self) -> int:
        """The burst tolerance: how far ahead of now the TAT may run, in microseconds."""
        return self.burst * self.interval_us

    def __str__(self) -> str:
        unit = {1: "s", 60: "m", 3600: "h", 86_400: "d"}.get(self.period)
        period = unit if unit is not None else f"{self.period}s"
        burst = f" burst {self.burst}" if self.burst != self.count else ""
        scope = f" per {self.scope}" if self.scope != "key" else ""
        return f"{self.count}/{period}{burst}{scope}"


def parse_limit(name: str, text: object) -> RateLimit:
    """`100/s burst 200 per owner` → RateLimit; LimitSyntaxError naming the problem."""
    if not isinstance(name, str) or not LIMIT_NAME_RE.match(name):
        raise LimitSyntaxError(
            f"bad limit name {name!r} (lower-case letters, digits, '-' or '_', at most 63)"
        )
    if not isinstance(text, str):
        raise LimitSyntaxError(
            f"a limit is text such as '100/s burst 200', got {type(text).__name__}"
        )
    words = text.strip().lower().split()
    scope: Scope = "key"
    if len(words) >= 2 and words[-2] == "per":
        if words[-1] not in SCOPES:
            raise LimitSyntaxError(f"unknown scope {words[-1]!r} (key, owner or address)")
        scope = words[-1]
        words = words[:-2]
    burst: int | None = None
    if len(words) >= 2 and words[-2] == "burst":
        burst = _whole(words[-1], "burst", MAX_COUNT)
        words = words[:-2]
    rate = " ".join(words)
    match = _RATE_RE.match(rate)
    if match is None:
        raise LimitSyntaxError(
            f"bad rate {text.strip()!r}: expected COUNT/PERIOD [burst N] [per key|owner|address],"
            " e.g. '100/s burst 200'"
        )
    count = _whole(match["count"], "count", MAX_COUNT)
    unit = _UNITS.get(match["unit"]) or _UNITS.get(match["unit"].rstrip("s"))
    if unit is None:
        raise LimitSyntaxError(f"unknown period unit {match['unit']!r} (s, m, h or d)")
    mult = _whole(match["mult"], "period", MAX_PERIOD_SECONDS) if match["mult"] else 1
    period = mult * unit
    if period > MAX_PERIOD_SECONDS:
        raise LimitSyntaxError(f"period of {period} seconds is over a year")
    limit = RateLimit(name, count, period, count if burst is None else burst, scope)
    if limit.tolerance_us > MAX_TOLERANCE_SECONDS * 1_000_000:
        raise LimitSyntaxError(
            f"burst {limit.burst} at {count}/{period}s takes over 10 years to refill"
        )
    return limit


def parse_cost(value: object) -> int:
    """A route's cost: a whole number from 0 (free) to MAX_COST."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitSyntaxError(f"cost must be a whole number from 0 to {MAX_COST}, got {value!r}")
    if not 0 <= value <= MAX_COST:
        raise LimitSyntaxError(f"cost must be from 0 to {MAX_COST}, got {value}")
    return value


def _whole(text: str, what: str, top: int) -> int:
    if not _NUMBER_RE.match(text):
        raise LimitSyntaxError(f"{what} must be a positive whole number, got {text!r}")
    value = int(text)
    if value < 1:
        raise LimitSyntaxError(f"{what} must be at least 1, got {value}")
    if value > top:
        raise LimitSyntaxError(f"{what} of {value} is over the maximum of {top}")
    return value

"""The rate-limit fields of an answer: pure rendering, no I/O.

Structured fields per draft-ietf-httpapi-ratelimit-headers (the latest draft's syntax):

    RateLimit-Policy: "burst";q=100;w=1, "daily";q=1000;w=86400
    RateLimit: "burst";r=42;t=1

`RateLimit-Policy` lists every limit of the route (q: units per window w, in seconds);
`RateLimit` names the most restrictive one: `r` units remaining, `t` seconds until it is full
again (on a refusal: until the request would pass). Limit names are `[a-z0-9_-]`, so they are
valid sf-strings as they are. The legacy `X-RateLimit-Limit/Remaining/Reset` (Reset in
seconds from now, like `t`) are added where the `legacy_ratelimit_headers` setting asks.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.limits.gcra import LimitState
from gateway.limits.model import RateLimit

Header = tuple[str, str]


def policy_value(limits: Sequence[RateLimit]) -> str:
    """The `RateLimit-Policy` value for a route's limits."""
    return ", ".join(f'"{limit.name}";q={limit.count};w={limit.period}' for limit in limits)


def seconds(us: int) -> int:
    """Microseconds as whole seconds, rounded up (waiting that long is always enough)."""
    return -(-us // 1_000_000)


def limit_fields(policy: str, state: LimitState, *, legacy: bool) -> list[Header]:
    """The fields of an answer whose most restrictive limit is `state`."""
    wait = seconds(state.reset_us if state.allowed else state.retry_us)
    remaining = max(0, state.remaining)
    name = state.limit.name
    fields = [("RateLimit-Policy", policy), ("RateLimit", f'"{name}";r={remaining};t={wait}')]
    if legacy:
        fields += [
            ("X-RateLimit-Limit", str(state.limit.count)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(wait)),
        ]
    return fields

"""Rate limits on the data plane: after the allow decision, before forwarding.

Only an allowed request reaches `limit`: a request refused for any other reason (400, 401,
403, 404) spends nothing. A route without limits costs one attribute test (`route.limits`).
The engine (`Services.limiter`) answers at once when it can (in-process, or the Redis
engine's fallback); otherwise `NeedsLimit` carries the request to one awaited `spend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from gateway import metrics
from gateway.errors import TooManyRequests
from gateway.limits.engine import Limiter
from gateway.limits.gcra import Outcome
from gateway.limits.headers import limit_fields, seconds
from gateway.limits.model import RateLimit
from gateway.policy.evaluate import Principal
from gateway.proxy.decision import Allowed, Refused


class NeedsLimit(NamedTuple):
    """An allowed request whose limits only an awaited engine call can decide."""

    allowed: Allowed
    buckets: tuple[str, ...]


def buckets(
    limits: Sequence[RateLimit], principal: Principal | None, address: str
) -> tuple[str, ...]:
    """The bucket of each limit for this caller: `<limit>:<scope>:<subject>`."""
    out = []
    for limit in limits:
        if limit.scope == "address" or principal is None:
            subject = "a:" + address
        elif limit.scope == "owner":
            subject = "o:" + principal.user_id
        elif principal.key_id is not None:
            subject = "k:" + principal.key_id
        else:  # a password on a route that takes them: the user stands for the key
            subject = "u:" + principal.user_id
        out.append(f"{limit.name}:{subject}")
    return tuple(out)


def limit(
    limiter: Limiter, allowed: Allowed, address: str, *, legacy: bool
) -> Allowed | Refused | NeedsLimit:
    """Decide an allowed request's limits now if the engine can."""
    route = allowed.route
    names = buckets(route.limits, allowed.principal, address)
    outcome = limiter.check_now(names, route.limits, route.cost)
    if outcome is None:
        return NeedsLimit(allowed, names)
    return settle(allowed, outcome, legacy=legacy)


async def spend(limiter: Limiter, needs: NeedsLimit, *, legacy: bool) -> Allowed | Refused:
    route = needs.allowed.route
    outcome = await limiter.check(needs.buckets, route.limits, route.cost)
    return settle(needs.allowed, outcome, legacy=legacy)


def settle(allowed: Allowed, outcome: Outcome, *, legacy: bool) -> Allowed | Refused:
    """The allowed request with its rate-limit fields, or the 429 naming the limit."""
    route = allowed.route
    state = outcome.reported
    fields = limit_fields(route.limit_policy, state, legacy=legacy)
    count = metrics.RATE_LIMITS.inc
    if outcome.allowed:
        for s in outcome.states:
            count(s.limit.name, "allowed")
        return allowed._replace(headers=fields)
    name = state.limit.name
    for s in outcome.states:
        count(s.limit.name, "allowed-not-spent" if s.allowed else "limited")
    wait = max(1, seconds(state.retry_us))
    error = TooManyRequests(
        f"rate limit {name!r} ({state.limit}) is exhausted; try again in {wait} seconds",
        retry_after=wait,
        code="rate-limited",
    )
    error.headers.update(fields)
    error.extra["limit"] = name
    # No key id: a refusal with one is logged, and a client over its limit would flood the log.
    return Refused(error, allowed.target.path, "rate-limited")

"""Rate limits and credits on the data plane: after the allow decision, before forwarding.

Only an allowed request reaches `limit`: a request refused for any other reason (400, 401,
403, 404) spends nothing. A route without limits, called by a key with neither limits nor
credits of its own, costs two attribute tests. The engine (`Services.limiter`) answers at
once when it can (in-process, or the Redis engine's fallback); otherwise `NeedsLimit`
carries the request to one awaited `spend`.

Which limits apply: the route's; a key carrying limits of its own (store: key_quotas) has
them in place of the route's per-key limits (per-owner and per-address limits stay), and on
every route, limited or not. A key with credits pays the route's cost from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from gateway import metrics
from gateway.errors import TooManyRequests
from gateway.limits.engine import Limiter
from gateway.limits.gcra import Outcome
from gateway.limits.headers import limit_fields, policy_value, seconds
from gateway.limits.model import RateLimit
from gateway.policy.evaluate import Principal
from gateway.proxy.decision import Allowed, Refused

CREDITS = "credits"  # the name a refusal for credits reports


class Plan(NamedTuple):
    """What one allowed request spends: its limits, their buckets, and whose credits."""

    limits: tuple[RateLimit, ...]
    buckets: tuple[str, ...]
    account: str | None
    policy: str  # the RateLimit-Policy value


class NeedsLimit(NamedTuple):
    """An allowed request whose limits only an awaited engine call can decide."""

    allowed: Allowed
    plan: Plan


def applies(allowed: Allowed) -> bool:
    """Whether any limit or credit applies to an allowed request."""
    principal = allowed.principal
    return bool(allowed.route.limits) or (principal is not None and principal.limited)


def plan(allowed: Allowed, address: str, named: Mapping[str, RateLimit]) -> Plan:
    route, principal = allowed.route, allowed.principal
    limits = route.limits
    policy = route.limit_policy
    account = None
    if principal is not None and principal.limited:
        if principal.limits:
            own = tuple(named[n] for n in principal.limits if n in named)
            limits = (*own, *(lim for lim in limits if lim.scope != "key"))
            policy = policy_value(limits)
        if principal.metered and route.cost and principal.key_id is not None:
            account = principal.key_id
    return Plan(limits, buckets(limits, principal, address), account, policy)


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
    limiter: Limiter,
    allowed: Allowed,
    address: str,
    named: Mapping[str, RateLimit],
    *,
    legacy: bool,
) -> Allowed | Refused | NeedsLimit:
    """Decide an allowed request's limits now if the engine can."""
    spent = plan(allowed, address, named)
    cost = allowed.route.cost
    outcome = limiter.check_now(spent.buckets, spent.limits, cost, spent.account)
    if outcome is None:
        return NeedsLimit(allowed, spent)
    return settle(allowed, spent, outcome, legacy=legacy)


async def spend(limiter: Limiter, needs: NeedsLimit, *, legacy: bool) -> Allowed | Refused:
    spent = needs.plan
    cost = needs.allowed.route.cost
    outcome = await limiter.check(spent.buckets, spent.limits, cost, spent.account)
    return settle(needs.allowed, spent, outcome, legacy=legacy)


def settle(allowed: Allowed, spent: Plan, outcome: Outcome, *, legacy: bool) -> Allowed | Refused:
    """The allowed request with its rate-limit fields, or the 429 naming the limit."""
    state = outcome.reported
    fields = limit_fields(spent.policy, state, legacy=legacy) if state is not None else []
    count = metrics.RATE_LIMITS.inc
    credits = outcome.credits
    if outcome.allowed:
        for s in outcome.states:
            count(s.limit.name, "allowed")
        if credits is not None:
            count(CREDITS, "allowed")
        return allowed._replace(headers=fields) if fields else allowed
    for s in outcome.states:
        count(s.limit.name, "allowed-not-spent" if s.allowed else "limited")
    if credits is not None and not credits.allowed:
        count(CREDITS, "limited")
        wait = credits.retry_after
        error = TooManyRequests(
            f"the key's credits are exhausted ({credits.balance} left, this route costs "
            f"{allowed.route.cost})"
            + (f"; they refill in {wait} seconds" if wait is not None else "; they never refill"),
            retry_after=max(1, wait or 0),
            code="quota-exhausted",
        )
        if wait is None:  # a retry cannot help until an administrator adds credits
            del error.headers["Retry-After"]
        name = CREDITS
    else:
        if credits is not None:
            count(CREDITS, "allowed-not-spent")
        assert state is not None  # refused, not for credits: a limit refused
        name = state.limit.name
        wait = max(1, seconds(state.retry_us))
        error = TooManyRequests(
            f"rate limit {name!r} ({state.limit}) is exhausted; try again in {wait} seconds",
            retry_after=wait,
            code="rate-limited",
        )
    error.headers.update(fields)
    error.extra["limit"] = name
    if credits is not None:
        error.extra["credits"] = credits.balance
    # No key id: a refusal with one is logged, and a client over its limit would flood the log.
    return Refused(error, allowed.target.path, error.code, None, allowed.route.path)

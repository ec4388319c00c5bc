"""`gateway policy explain`: the decision for one key and one request, with its reasons."""

from __future__ import annotations

from gateway.errors import NotFound, denial_error
from gateway.keys.verify import KeyState, KeyVerifier, principal_for
from gateway.limits.headers import seconds
from gateway.limits.redis_engine import RedisLimiter
from gateway.policy.evaluate import Denied, authorize, route_for
from gateway.policy.paths import TargetRejected, canonicalize
from gateway.proxy.decision import Allowed
from gateway.proxy.limiting import applies, plan
from gateway.services import Services
from gateway.store.base import KeyWithOwner


async def explain(services: Services, key_id: str, method: str, raw_target: str) -> list[str]:
    key = await services.store.get_key(key_id)
    owner = await services.store.get_user(key.user_id) if key else None
    if key is None or owner is None:
        raise NotFound(f"no key with id {key_id!r}", code="apikey-not-found")
    quota = await services.store.get_quota(key.id)
    state = KeyState.from_store(
        KeyWithOwner(
            key,
            owner,
            limits=quota.limits if quota else (),
            metered=quota is not None and quota.credits is not None,
        )
    )
    principal = principal_for(state, services.policy.catalog)
    method = method.upper()
    lines = [
        f"key:      {key.id} of {owner.email} ({key.status}), "
        f"permissions: {' '.join(key.permissions) or '(none)'}",
        f"owner:    grants {' '.join(str(g) for g in principal.grants) or '(none)'}",
        f"path:     restricted to {key.path_rule}" if key.path_rule else "path:     unrestricted",
    ]
    try:
        target = canonicalize(raw_target)
    except TargetRejected as exc:
        return [
            *lines,
            f"request:  {method} {raw_target!r}",
            f"decision: DENY 400 {exc.reason}: {exc}",
        ]
    lines.append(f"request:  {method} {target.path}" + (f"?{target.query}" if target.query else ""))
    refusal = KeyVerifier.refusal(state)
    if refusal is not None:
        return [*lines, f"decision: DENY 401 {refusal}"]
    match = route_for(method, target.path, services.policy)
    if isinstance(match, Denied):
        status = denial_error(match).status
        return [*lines, f"decision: DENY {status} {match.reason}: {match.detail}"]
    route = match.route
    lines.append(
        f"route:    {route.path} [{','.join(route.methods)}] -> {route.upstream} "
        f"({route.source or 'policy'})"
    )
    lines.append(f"requires: {'nothing (auth: none)' if route.auth_none else route.requirement}")
    decision = authorize(principal, match, target.path, services.policy.catalog)
    if isinstance(decision, Denied):
        status = denial_error(decision).status
        return [*lines, f"decision: DENY {status} {decision.reason}: {decision.detail}"]
    allowed = Allowed(target, route, services.policy.upstreams[route.upstream], principal)
    return [*lines, *(await limit_lines(services, allowed)), "decision: ALLOW"]


async def limit_lines(services: Services, allowed: Allowed) -> list[str]:
    """The limits and credits an allowed request would spend, and what is left of each, read
    without spending (the engine asked for a cost of 0). Per-address limits depend on the
    client, so they are named only."""
    if not applies(allowed):
        return ["limits:   none"]
    spent = plan(allowed, "(client address)", services.policy.limits)
    lines = [f"cost:     {allowed.route.cost}"]
    keyed = [
        (lim, bucket)
        for lim, bucket in zip(spent.limits, spent.buckets, strict=True)
        if lim.scope != "address"
    ]
    outcome = await services.limiter.check(
        [b for _, b in keyed], [lim for lim, _ in keyed], 0, spent.account
    )
    states = {s.limit.name: s for s in outcome.states}
    for lim in spent.limits:
        if lim.scope == "address":
            lines.append(f"limit:    {lim.name} {lim}: per client address")
            continue
        left = states[lim.name]
        lines.append(
            f"limit:    {lim.name} {lim}: {left.remaining} of {lim.burst} left, "
            f"full again in {seconds(left.reset_us)} s"
        )
    if outcome.credits is not None:
        lines.append(f"credits:  {outcome.credits.balance} left")
    where = "Redis" if isinstance(services.limiter, RedisLimiter) else "this process only"
    lines.append(f"state:    as counted in {where}")
    return lines

"""The data plane on aiohttp: every request not addressed to the gateway itself.

canonicalise → route → credential → verify → decide → forward. The decision is the pure
`decision.decide`; this module adds the one lookup it may need (`finish`), counts and logs the
outcome, and forwards. The fast front (`front.py`) calls `decide_now` and `finish` too, so both
servers decide alike; every refusal is problem+json.

Failed keys are charged to the client's address (`keys/budget.py`): a key refused from memory
(malformed, or in the negative cache) when it is refused, a key that needed a lookup when the
lookup says unknown. An address over budget gets 429 instead, and never a lookup. A key allowed
from memory is never checked, so the hot path pays nothing for the budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from gateway import events, metrics
from gateway.access import EXCHANGE, Exchange
from gateway.credentials import KeyCredential, PasswordCredential
from gateway.errors import GatewayError, Unauthenticated
from gateway.keys.budget import KEY_FAILURES
from gateway.policy.evaluate import Principal, owner_grants
from gateway.policy.networks import AddressRule
from gateway.proxy.client_address import resolve
from gateway.proxy.decision import (
    Allowed,
    Decision,
    HeaderValues,
    NeedsLookup,
    Refused,
    decide,
    resume,
)
from gateway.proxy.forward import Forwarder
from gateway.proxy.limiting import NeedsLimit, applies, limit, spend
from gateway.proxy.render import problem_response
from gateway.services import Services
from gateway.state import FORWARDER, SERVICES

log: Final = logging.getLogger("gateway.proxy")
# Refusals of a known key, logged as security events with the unknown and malformed ones.
_KEY_REFUSALS: Final = frozenset({"key-disabled", "key-expired", "owner-disabled"})


Pending = NeedsLookup | NeedsLimit


def decide_now(
    services: Services, method: str, raw_target: str, values: HeaderValues, peer: str | None
) -> Decision | NeedsLimit:
    """The decision from what is in memory (no I/O): Allowed, Refused, or a pending one
    (NeedsLookup, NeedsLimit) which `finish` completes. The fast front serves a request
    decided now without a task for it. `peer` is the socket peer's address, for the
    failed-key budget and per-address limits."""
    decision = decide(
        services.policy,
        services.verifier,
        method,
        raw_target,
        values,
        lambda: client_address(values, peer, services),
    )
    if isinstance(decision, Allowed):
        principal = decision.principal
        if decision.route.limits or (principal is not None and principal.authority.limited):
            return _limited(services, decision, values, peer)
        _note_use(services, decision)
    elif isinstance(decision, Refused):
        if decision.outcome in KEY_FAILURES:
            decision = _key_failed(services, decision, values, peer)
        _count_refusal(decision, method)
    return decision


def _key_failed(
    services: Services, refused: Refused, values: HeaderValues, peer: str | None
) -> Refused:
    """Charge a key refused from memory to its address; the 429 instead once it is over."""
    address = client_address(values, peer, services)
    events.key_refused(refused.outcome, refused.key_id, address)
    over = services.key_budget.charge(address)
    if over is None:
        return refused
    return Refused(over, refused.instance, over.code, refused.key_id, refused.route)


def _limited(
    services: Services, allowed: Allowed, values: HeaderValues, peer: str | None
) -> Allowed | Refused | NeedsLimit:
    """An allowed request on a route with limits: spend them now if the engine can."""
    address = client_address(values, peer, services)
    legacy = services.settings.legacy_ratelimit_headers
    named = services.policy.limits
    decision = limit(services.limiter, allowed, address, named, legacy=legacy)
    if not isinstance(decision, NeedsLimit):
        _count_limited(services, decision)
    return decision


def _count_limited(services: Services, decision: Allowed | Refused) -> None:
    # A rate-limited refusal carries no key id: it is counted (metrics, the access log's
    # outcome) when answered, and never logged on its own.
    if isinstance(decision, Allowed):
        _note_use(services, decision)


async def finish(
    services: Services, needs: Pending, values: HeaderValues, peer: str | None
) -> Allowed | Refused:
    """Complete a decision with its one lookup: the key's record from Redis or the database
    (hashed already), or the password check, then the route's limits; or only the limits.
    `peer` is the socket peer's address, for throttling key and password failures and for
    per-address limits."""
    if isinstance(needs, NeedsLimit):
        legacy = services.settings.legacy_ratelimit_headers
        spent = await spend(services.limiter, needs, legacy=legacy)
        _count_limited(services, spent)
        return spent
    credential = needs.credential
    principal: Principal
    try:
        if isinstance(credential, KeyCredential):
            assert needs.digest is not None  # a key's NeedsLookup always carries its hash
            address = client_address(values, peer, services)
            principal = await services.lookup_key(credential.key, needs.digest, address)
        else:
            address = client_address(values, peer, services)
            principal = await password_principal(services, credential, address)
    except GatewayError as exc:
        route = needs.match.route.path
        decision: Allowed | Refused = Refused(exc, needs.target.path, exc.code, None, route)
        if exc.code in KEY_FAILURES or exc.code in _KEY_REFUSALS:
            events.key_refused(exc.code, None, address)
    else:
        decision = resume(needs, principal, lambda: address)
    if isinstance(decision, Allowed) and applies(decision):
        limited = _limited(services, decision, values, peer)
        if not isinstance(limited, NeedsLimit):
            return limited
        return await finish(services, limited, values, peer)
    if isinstance(decision, Allowed):
        _note_use(services, decision)
    else:
        _count_refusal(decision, needs.method)
    return decision


def _note_use(services: Services, allowed: Allowed) -> None:
    """Which requirement a key met, for least privilege (resolved off the request path)."""
    principal = allowed.principal
    if allowed.need is not None and principal is not None and principal.key_id is not None:
        services.usage.note(
            principal.key_id, allowed.need, principal.authority.key_permissions or ()
        )


def _count_refusal(refused: Refused, method: str) -> None:
    if refused.key_id is not None:  # an authenticated caller the policy refused
        log.info(
            "denied %s %s key=%s: %s",
            method,
            refused.instance,
            refused.key_id,
            refused.error.message,
        )


async def password_principal(
    services: Services, credential: PasswordCredential, address: str
) -> Principal:
    """The user for Basic email:password (throttled with every other password check)."""
    user = await services.check_password(credential.email, credential.password, address)
    if user is None:
        raise Unauthenticated("the email or password is wrong", code="bad-credentials")
    return Principal.of(
        user_id=user.id,
        email=user.email,
        grants=owner_grants(services.policy.catalog, user.grants, is_admin=user.is_admin),
        is_admin=user.is_admin,
        via="password",
        address_rule=AddressRule.of(user.allowed_networks),
    )


def client_address(values: HeaderValues, remote: str | None, services: Services) -> str:
    """The client's address for throttling and IP allow-lists (proxy/client_address.py)."""
    return resolve(values, remote, services.settings.trusted_proxies)


def _note(exchange: Exchange, decision: Allowed | Refused, lookup: bool) -> None:
    """The decision, for metrics and the access log (observing.py)."""
    exchange.auth = seconds = time.perf_counter() - exchange.started
    metrics.auth_decided(seconds, lookup=lookup)
    if isinstance(decision, Refused):
        exchange.route = decision.route or metrics.UNMATCHED
        exchange.outcome, exchange.key_id = decision.outcome, decision.key_id
        return
    exchange.route, exchange.outcome = decision.route.path, "allowed"
    if decision.principal is not None:
        exchange.key_id = decision.principal.key_id
        exchange.user_id = decision.principal.authority.user_id


async def defer_continue(request: web.Request) -> None:
    """The catch-all's expect handler: send nothing yet.

    aiohttp's default answers `100 Continue` before the handler runs, which would invite an
    upload the gateway may refuse. `handle` sends it only once the request is allowed; a
    refused client gets its 401/403 without having sent the body.
    """
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unsupported Expect: {expect[:40]}")


async def handle(request: web.Request) -> web.StreamResponse:
    headers = request.headers

    def values(name: str) -> Sequence[str]:
        return headers.getall(name, ())

    services = request.app[SERVICES]
    decision = decide_now(services, request.method, request.raw_path, values, request.remote)
    lookup = isinstance(decision, NeedsLookup)
    if isinstance(decision, NeedsLookup | NeedsLimit):
        decision = await finish(services, decision, values, request.remote)
    exchange = request.get(EXCHANGE)
    if exchange is not None:
        _note(exchange, decision, lookup)
    if isinstance(decision, Refused):
        return problem_response(decision.error, decision.instance)
    if request.version >= (1, 1) and "Expect" in headers:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    forwarder: Forwarder = request.app[FORWARDER]
    response = await forwarder.forward(
        request,
        decision.target,
        decision.upstream,
        decision.route,
        decision.principal,
        decision.headers,
    )
    if "Upgrade" in headers and response.status != 101:
        # An upgrade the route does not take was forwarded as plain HTTP, but aiohttp's parser
        # has taken every byte after its head as the payload: this connection can carry no
        # other request. Closing it is the honest end (the fast front keeps serving).
        response.force_close()
    return response

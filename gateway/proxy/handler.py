"""The data plane: every request not addressed to the gateway itself.

canonicalise → route → credential → verify → decide → forward. Everything but the key
lookup and the forwarding is pure and runs in microseconds; every refusal is problem+json.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from aiohttp import web

from gateway import metrics
from gateway.credentials import KeyCredential, PasswordCredential, extract
from gateway.errors import BadRequest, GatewayError, Unauthenticated, problem
from gateway.policy.evaluate import Denied, Principal, authorize, owner_grants, route_for
from gateway.policy.model import Route, RouteMatch, Upstream
from gateway.policy.paths import CanonicalTarget, TargetRejected, canonicalize
from gateway.proxy.forward import Forwarder
from gateway.services import Services
from gateway.state import FORWARDER, SERVICES

log = logging.getLogger("gateway.proxy")

PROBLEM_JSON = "application/problem+json"


def problem_parts(
    error: GatewayError, instance: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a problem+json answer: one rendering for both servers."""
    headers = {"Content-Type": PROBLEM_JSON, "Cache-Control": "no-store", **error.headers}
    return error.status, headers, json.dumps(problem(error, instance)).encode()


def problem_response(error: GatewayError, instance: str | None = None) -> web.Response:
    status, headers, body = problem_parts(error, instance)
    return web.Response(status=status, body=body, headers=headers)


class Decision(NamedTuple):
    """An allowed request: where it goes and as whom."""

    target: CanonicalTarget
    route: Route
    upstream: Upstream
    principal: Principal | None


class Refusal(NamedTuple):
    """A refused request: the problem to answer with and its `instance`."""

    error: GatewayError
    instance: str | None


HeaderValues = Callable[[str], Sequence[str]]


async def authenticate(
    values: HeaderValues, peer: str | None, services: Services, *, passwords: bool
) -> Principal:
    """The request's principal from its one credential; raises Unauthenticated/BadRequest.

    `values(name)` is every value of a request header (case-insensitive); `peer` the socket
    peer's address, for throttling password failures.
    """
    credential = extract(values("Authorization"), values("X-API-KEY"))
    if credential is None:
        raise Unauthenticated("an API key is required", code="credential-missing")
    if isinstance(credential, KeyCredential):
        return (await services.verifier.verify(credential.key)).principal
    if not passwords:
        # Refused before any password check, so such routes are no password oracle.
        raise Unauthenticated("this route accepts API keys only", code="password-not-allowed")
    return await password_principal(services, credential, client_address(values, peer, services))


async def password_principal(
    services: Services, credential: PasswordCredential, address: str
) -> Principal:
    """The user for Basic email:password (throttled with every other password check)."""
    user = await services.check_password(credential.email, credential.password, address)
    if user is None:
        raise Unauthenticated("the email or password is wrong", code="bad-credentials")
    return Principal(
        user_id=user.id,
        email=user.email,
        grants=owner_grants(services.policy.catalog, user.grants, is_admin=user.is_admin),
        is_admin=user.is_admin,
        via="password",
    )


def client_address(values: HeaderValues, remote: str | None, services: Services) -> str:
    """The client's address for throttling: the peer, or behind a trusted proxy the last
    X-Forwarded-For hop that is not itself a trusted proxy (earlier hops are client-made)."""
    peer = remote or ""
    trusted = services.settings.trusted_proxies
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for v in values("X-Forwarded-For") for h in v.split(",")]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop[:64]
    return peer


def _within(
    address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


async def decide(
    services: Services, method: str, raw_target: str, values: HeaderValues, peer: str | None
) -> Decision | Refusal:
    """The data plane's decision for one request, shared by the aiohttp handler and the fast
    front (`front.py`): canonicalise → route → authenticate → authorize."""
    routed = _route(services, method, raw_target)
    if isinstance(routed, Refusal):
        return routed
    target, match = routed
    now = _decide_routed_now(services, method, target, match, values)
    if now is not None:
        return now
    try:
        principal = await authenticate(
            values, peer, services, passwords=match.route.allow_passwords
        )
    except GatewayError as exc:
        metrics.PROXY_REQUESTS.inc(exc.code)  # codes are a small fixed set
        return Refusal(exc, target.path)
    return _authorize(services, method, target, match, principal)


def decide_now(
    services: Services, method: str, raw_target: str, values: HeaderValues
) -> Decision | Refusal | None:
    """`decide` from what is in memory: None when only a lookup can tell (a key not in the
    in-process cache, a password, no credential), and `decide` then does it all. The fast
    front serves a request whose decision is known now without starting a task for it."""
    routed = _route(services, method, raw_target)
    if isinstance(routed, Refusal):
        return routed
    return _decide_routed_now(services, method, *routed, values)


def _decide_routed_now(
    services: Services,
    method: str,
    target: CanonicalTarget,
    match: RouteMatch,
    values: HeaderValues,
) -> Decision | Refusal | None:
    if match.route.auth_none:
        return _authorize(services, method, target, match, None)
    try:
        credential = extract(values("Authorization"), values("X-API-KEY"))
        if not isinstance(credential, KeyCredential):
            return None  # no credential (a 401) or a password: `authenticate` says which
        found = services.verifier.cached(credential.key)
    except GatewayError as exc:
        metrics.PROXY_REQUESTS.inc(exc.code)
        return Refusal(exc, target.path)
    if found is None:
        return None
    return _authorize(services, method, target, match, found.principal)


def _route(
    services: Services, method: str, raw_target: str
) -> tuple[CanonicalTarget, RouteMatch] | Refusal:
    try:
        target = canonicalize(raw_target)
    except TargetRejected as exc:
        metrics.PROXY_REQUESTS.inc("bad-target")
        return Refusal(BadRequest(str(exc), code=f"bad-target-{exc.reason}"), None)
    match = route_for(method, target.path, services.policy)
    if isinstance(match, Denied):
        metrics.PROXY_REQUESTS.inc(match.reason)
        return Refusal(_denial_error(match, None), target.path)
    return target, match


def _authorize(
    services: Services,
    method: str,
    target: CanonicalTarget,
    match: RouteMatch,
    principal: Principal | None,
) -> Decision | Refusal:
    decision = authorize(principal, match, target.path, services.policy.catalog)
    if isinstance(decision, Denied):
        metrics.PROXY_REQUESTS.inc(decision.reason)
        log.info(
            "denied %s %s key=%s: %s",
            method,
            target.path,
            principal.key_id if principal else None,
            decision.detail,
        )
        return Refusal(_denial_error(decision, principal), target.path)
    metrics.PROXY_REQUESTS.inc("allowed")
    upstream = services.policy.upstreams[match.route.upstream]
    return Decision(target, match.route, upstream, principal)


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

    result = await decide(
        request.app[SERVICES], request.method, request.raw_path, values, request.remote
    )
    if isinstance(result, Refusal):
        return problem_response(result.error, result.instance)
    if request.version >= (1, 1) and "Expect" in headers:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    forwarder: Forwarder = request.app[FORWARDER]
    return await forwarder.forward(
        request, result.target, result.upstream, result.route, result.principal
    )


def _denial_error(denied: Denied, principal: Principal | None) -> GatewayError:
    """The problem for a denial, naming what failed: the permission or the path rule."""
    extra: dict[str, str] = {}
    if denied.missing is not None:
        extra["missingPermission"] = str(denied.missing)
    if denied.reason == "path-not-allowed" and principal is not None and principal.path_rule:
        extra["allowedPath"] = str(principal.path_rule)
    if denied.status == 401:
        error: GatewayError = Unauthenticated(denied.detail, code=denied.reason, extra=extra)
    else:
        error = GatewayError(denied.detail, code=denied.reason, extra=extra)
        error.status = denied.status
    return error

"""The data plane: every request not addressed to the gateway itself.

canonicalise → route → credential → verify → decide → forward. Everything but the key
lookup and the forwarding is pure and runs in microseconds; every refusal is problem+json.
"""

from __future__ import annotations

import ipaddress
import json
import logging

from aiohttp import web

from gateway import metrics
from gateway.credentials import KeyCredential, PasswordCredential, extract
from gateway.errors import BadRequest, GatewayError, TooManyRequests, Unauthenticated, problem
from gateway.policy.evaluate import Denied, Principal, authorize, owner_grants, route_for
from gateway.policy.paths import TargetRejected, canonicalize
from gateway.proxy.forward import Forwarder
from gateway.services import Services
from gateway.state import FORWARDER, SERVICES

log = logging.getLogger("gateway.proxy")

PROBLEM_JSON = "application/problem+json"


def problem_response(error: GatewayError, instance: str | None = None) -> web.Response:
    headers = {"Content-Type": PROBLEM_JSON, "Cache-Control": "no-store", **error.headers}
    return web.Response(
        status=error.status, body=json.dumps(problem(error, instance)).encode(), headers=headers
    )


async def authenticate(request: web.Request, services: Services, *, passwords: bool) -> Principal:
    """The request's principal from its one credential; raises Unauthenticated/BadRequest."""
    headers = request.headers
    credential = extract(headers.getall("Authorization", ()), headers.getall("X-API-KEY", ()))
    if credential is None:
        raise Unauthenticated("an API key is required", code="credential-missing")
    if isinstance(credential, KeyCredential):
        return (await services.verifier.verify(credential.key)).principal
    if not passwords:
        # Refused before any password check, so such routes are no password oracle.
        raise Unauthenticated("this route accepts API keys only", code="password-not-allowed")
    return await password_principal(services, credential, client_address(request, services))


async def password_principal(
    services: Services, credential: PasswordCredential, address: str
) -> Principal:
    """The user for Basic email:password, throttling failures per address and per account."""
    account = credential.email.strip().lower()
    wait = max(
        services.ip_throttle.retry_after(address), services.account_throttle.retry_after(account)
    )
    if wait:
        raise TooManyRequests(
            "too many failed password attempts; try again later", retry_after=wait
        )
    user = await services.users.authenticate(credential.email, credential.password)
    if user is None:
        services.ip_throttle.failed(address)
        services.account_throttle.failed(account)
        raise Unauthenticated("the email or password is wrong", code="bad-credentials")
    # Only the account's count is cleared: one good login must not buy an address more guesses.
    services.account_throttle.succeeded(account)
    return Principal(
        user_id=user.id,
        email=user.email,
        grants=owner_grants(services.policy.catalog, user.grants, is_admin=user.is_admin),
        is_admin=user.is_admin,
        via="password",
    )


def client_address(request: web.Request, services: Services) -> str:
    """The client's address for throttling: the peer, or behind a trusted proxy the last
    X-Forwarded-For hop that is not itself a trusted proxy (earlier hops are client-made)."""
    peer = request.remote or ""
    trusted = services.settings.trusted_proxies
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", ()) for h in v.split(",")]
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


async def handle(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    try:
        target = canonicalize(request.raw_path)
    except TargetRejected as exc:
        metrics.PROXY_REQUESTS.labels("bad-target").inc()
        return problem_response(BadRequest(str(exc), code=f"bad-target-{exc.reason}"))
    match = route_for(request.method, target.path, services.policy)
    if isinstance(match, Denied):
        metrics.PROXY_REQUESTS.labels(match.reason).inc()
        return problem_response(_denial_error(match, None), target.path)
    principal = None
    if not match.route.auth_none:
        try:
            principal = await authenticate(request, services, passwords=match.route.allow_passwords)
        except GatewayError as exc:
            metrics.PROXY_REQUESTS.labels(exc.code).inc()  # codes are a small fixed set
            return problem_response(exc, target.path)
    decision = authorize(principal, match, target.path, services.policy.catalog)
    if isinstance(decision, Denied):
        metrics.PROXY_REQUESTS.labels(decision.reason).inc()
        log.info(
            "denied %s %s key=%s: %s",
            request.method,
            target.path,
            principal.key_id if principal else None,
            decision.detail,
        )
        return problem_response(_denial_error(decision, principal), target.path)
    metrics.PROXY_REQUESTS.labels("allowed").inc()
    forwarder: Forwarder = request.app[FORWARDER]
    upstream = services.policy.upstreams[match.route.upstream]
    return await forwarder.forward(request, target, upstream, match.route, principal)


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

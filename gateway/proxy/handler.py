"""The data plane: every request not addressed to the gateway itself.

canonicalise → route → credential → verify → decide → forward. Everything but the key
lookup and the forwarding is pure and runs in microseconds; denials are problem+json.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from gateway import metrics
from gateway.credentials import KeyCredential, PasswordCredential, extract
from gateway.errors import BadRequest, GatewayError, Unauthenticated, problem
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
        raise Unauthenticated("this route accepts API keys only", code="password-not-allowed")
    return await password_principal(services, credential)


async def password_principal(services: Services, credential: PasswordCredential) -> Principal:
    user = await services.users.authenticate(credential.email, credential.password)
    if user is None:
        raise Unauthenticated("the email or password is wrong", code="bad-credentials")
    return Principal(
        user_id=user.id,
        email=user.email,
        grants=owner_grants(services.policy.catalog, user.grants, is_admin=user.is_admin),
        is_admin=user.is_admin,
        via="password",
    )


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
        return problem_response(_denial_error(match), target.path)
    principal = None
    if not match.route.auth_none:
        try:
            principal = await authenticate(request, services, passwords=match.route.allow_passwords)
        except GatewayError as exc:
            metrics.PROXY_REQUESTS.labels(exc.code if exc.status == 401 else "unavailable").inc()
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
        return problem_response(_denial_error(decision), target.path)
    metrics.PROXY_REQUESTS.labels("allowed").inc()
    forwarder: Forwarder = request.app[FORWARDER]
    upstream = services.policy.upstreams[match.route.upstream]
    return await forwarder.forward(request, target, upstream, match.route, principal)


def _denial_error(denied: Denied) -> GatewayError:
    extra = {"missingPermission": str(denied.missing)} if denied.missing is not None else {}
    error = GatewayError(denied.detail, code=denied.reason, extra=extra)
    error.status = denied.status
    return error

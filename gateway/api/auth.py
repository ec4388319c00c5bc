"""Who is calling an API endpoint, and the checks every endpoint shares.

A request carries exactly one credential (`credentials.extract`): a key in any carrier
(`X-API-KEY`, `token`, `Bearer`, Basic `haplo:<key>`) or, where the endpoint allows it, Basic
`email:password`. Endpoints that serve people in a browser also accept the logged-in session
(from `gateway.sessions`, imported lazily: the pages are optional), and then any change needs
the page's CSRF token, because a browser sends the cookie on cross-site requests too.

A key's path restriction (Haplo's `/prefix`, `=/exact`) applies to the gateway's own endpoints
as to proxied ones: a key limited to `/api/reports` cannot manage keys. Failed passwords, and
failed keys (`keys/budget.py`, one budget with the data plane), are throttled per client
address, in the surface's own error shape (429 + Retry-After); an address over its key budget
costs no lookup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

from gateway.credentials import KeyCredential, PasswordCredential, extract
from gateway.errors import Forbidden, GatewayError, Unauthenticated
from gateway.keys.budget import KEY_FAILURES
from gateway.keys.verify import VerifiedKey
from gateway.policy.evaluate import Principal, owner_grants
from gateway.policy.model import UNRESTRICTED, Catalog, Perm
from gateway.policy.networks import IP_NOT_ALLOWED_TEXT, AddressRule
from gateway.policy.paths import TargetRejected, canonicalize
from gateway.services import Services
from gateway.state import SERVICES, SETTINGS

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller. `key_text` is the key it presented (Greenfield's `current`
    answers with it); it is never logged or stored."""

    principal: Principal
    key_text: str | None = field(default=None, repr=False)


async def authenticate(
    request: web.Request,
    *,
    passwords: bool,
    sessions: bool = False,
    path_rule: bool = True,
) -> Caller:
    """The caller of this request; Unauthenticated, BadRequest, Forbidden or TooManyRequests.

    `path_rule=False` only where any valid key may act on itself (Greenfield's `current`).
    """
    services = request.app[SERVICES]
    headers = request.headers
    try:
        credential = extract(headers.getall("Authorization", ()), headers.getall("X-API-KEY", ()))
    except GatewayError as exc:
        raise _charged(request, services, exc) from None
    if credential is None:
        principal = await _session_principal(request) if sessions else None
        if principal is None:
            raise Unauthenticated(
                "authentication is required: send an API key "
                "(Authorization: token <key>, Bearer <key> or X-API-KEY)",
                code="credential-missing",
            )
        return Caller(principal)
    if isinstance(credential, KeyCredential):
        verified = await _verified_key(request, services, credential.key)
        check_address(request, verified)
        if path_rule:
            check_path_rule(request, verified)
        return Caller(verified, credential.key)
    if not passwords:
        raise Unauthenticated(
            "this endpoint accepts API keys only, not an email and password",
            code="password-not-allowed",
        )
    return Caller(await _password_principal(request, services, credential))


async def _verified_key(request: web.Request, services: Services, key: str) -> VerifiedKey:
    """`verifier.verify`, within the client address's failed-key budget."""
    verifier = services.verifier
    try:
        digest = verifier.digest(key)
        found = verifier.known(digest)
    except GatewayError as exc:
        raise _charged(request, services, exc) from None
    return found or await services.lookup_key(key, digest, _address(request))


def _charged(request: web.Request, services: Services, error: GatewayError) -> GatewayError:
    """`error`, charged to the client's failed-key budget when it is a bad key; the 429
    instead once the address is over budget."""
    if error.code not in KEY_FAILURES:
        return error
    return services.key_budget.charge(_address(request)) or error


def check_address(request: web.Request, principal: Principal) -> None:
    """A key (or owner) with an IP allow-list manages nothing from elsewhere either."""
    rule = principal.address_rule
    if rule is not None and not rule.allows(_address(request)):
        raise Forbidden(IP_NOT_ALLOWED_TEXT, code="ip-not-allowed")


def check_path_rule(request: web.Request, principal: Principal) -> None:
    rule = principal.path_rule
    if rule is None:
        return
    try:
        path = canonicalize(request.raw_path).path
    except TargetRejected:
        path = None
    if path is None or not rule.allows(path):
        raise Forbidden(f"the API key is limited to {rule}", code="path-not-allowed")


async def _password_principal(
    request: web.Request, services: Services, credential: PasswordCredential
) -> Principal:
    user = await services.check_password(credential.email, credential.password, _address(request))
    if user is None:
        raise Unauthenticated("the email or password is wrong", code="bad-credentials")
    principal = Principal.of(
        user_id=user.id,
        email=user.email,
        grants=owner_grants(services.policy.catalog, user.grants, is_admin=user.is_admin),
        is_admin=user.is_admin,
        via="password",
        address_rule=AddressRule.of(user.allowed_networks),
    )
    check_address(request, principal)
    return principal


async def _session_principal(request: web.Request) -> Principal | None:
    try:
        from gateway import sessions
    except ModuleNotFoundError as exc:  # the pages are not installed: no sessions
        if exc.name != "gateway.sessions":
            raise
        return None
    principal = await sessions.session_principal(request)
    if principal is None:
        return None
    if request.method not in SAFE_METHODS and not await sessions.csrf_valid(
        request, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden(
            f"a browser session must send the page's CSRF token in {CSRF_HEADER}",
            code="csrf-token-invalid",
        )
    return principal


def client_ip(remote: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or behind trusted proxies the nearest untrusted hop of
    X-Forwarded-For. Values sent by an untrusted peer are ignored: anyone can forge them."""
    peer = remote or "unknown"
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop if _is_ip(hop) else peer
    return peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _within(text: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in net for net in networks)


# -- requirements -------------------------------------------------------------------------


def scope(catalog: Catalog, name: str, fallback: str = UNRESTRICTED) -> str:
    """`name` where the catalog defines it, else `fallback` (a catalog without Buckaroo's or
    BTCPay's management permissions leaves those endpoints to unrestricted callers)."""
    return name if name in catalog else fallback


def require(principal: Principal, catalog: Catalog, name: str) -> None:
    """Forbidden (missing-permission) unless the caller holds `name` (a key: key and owner)."""
    if not principal.may(catalog, Perm(name)):
        raise Forbidden(
            f"this needs the {name} permission",
            code="missing-permission",
            extra={"missingPermission": name},
        )


async def reauthenticate(request: web.Request, principal: Principal, password: object) -> None:
    """Check the caller's own password, sent again with a sensitive request (decrypt).

    Throttled like a sign-in. Forbidden rather than 401: the request's credential is fine,
    it is the fresh proof that failed.
    """
    services = request.app[SERVICES]
    user = await services.users.find(principal.user_id)
    if user.is_service:
        raise Forbidden(
            "service users have no password, so their keys cannot be read back",
            code="reauthentication-impossible",
        )
    checked = (
        await services.check_password(user.email, password, _address(request))
        if isinstance(password, str)
        else None
    )
    if checked is None or checked.id != user.id:
        raise Forbidden("the password is wrong", code="reauthentication-failed")


def _address(request: web.Request) -> str:
    """The client's address for the password throttles and the failed-key budget."""
    settings = request.app[SETTINGS]
    return client_ip(
        request.remote, request.headers.getall("X-Forwarded-For", ()), settings.trusted_proxies
    )

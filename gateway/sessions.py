"""Browser sessions for the hosted pages: the session cookie, CSRF tokens, who is logged in.

Sessions live in the database (table `sessions`), so logging out, or a second instance behind
the load balancer, sees the same truth, and an administrator disabling a user ends his
sessions at the next request (the user is re-read on every page).

* The cookie holds a random 256-bit token; the database holds only its HMAC under a key
  derived from the server secret (HKDF, "keygate session"), like API keys.
* Logging in always issues a new token (no session fixation); logging out deletes the row.
* A visitor who is not logged in still gets a token (an "anonymous session", with no row)
  the first time a page needs a CSRF token, so the login form is protected as well.
* CSRF tokens are synchroniser tokens bound to the session: HMAC(csrf key, session token),
  derived rather than stored, compared with `hmac.compare_digest`.
* The cookie is `HttpOnly; SameSite=Lax; Path=/`, and `Secure` when the request came over
  TLS, directly or through a trusted proxy that says `X-Forwarded-Proto: https`.

`session_principal(request)` is what other surfaces (the `/v1/apikeys` API) call to accept a
logged-in browser. It does not check CSRF: a caller that changes state must check
`csrf_valid(request, token)` itself (e.g. on an `X-CSRF-Token` header).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.policy.evaluate import Principal, owner_grants
from gateway.policy.model import Catalog
from gateway.proxy.headers import SESSION_COOKIE
from gateway.settings import Settings
from gateway.state import SERVICES, SETTINGS
from gateway.store.base import Audit, Session, User

COOKIE = SESSION_COOKIE
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


@dataclass(slots=True)
class BrowserSession:
    """This request's session. `token` None: the browser sent none and none was needed yet."""

    token: str | None
    user: User | None
    # True when the response must (re)send the cookie: a new token was issued.
    fresh: bool = False


_SESSION = web.RequestKey("keygate_browser_session", BrowserSession)


@functools.lru_cache(maxsize=8)
def _subkey(secret: bytes, purpose: bytes) -> bytes:
    """A key for one purpose, derived from the server secret, so a session-token hash can
    never be confused with an API-key hash or a CSRF token."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


def keyed_hash(settings: Settings, purpose: bytes, text: str) -> bytes:
    """HMAC-SHA256 of a high-entropy token under a key for `purpose` (what tables store)."""
    return hmac.digest(_subkey(settings.secret, purpose), text.encode("ascii"), hashlib.sha256)


def sign(settings: Settings, purpose: str, text: str) -> str:
    """A URL-safe MAC of `text` for `purpose` (signed form fields of the pages)."""
    digest = hmac.digest(
        _subkey(settings.secret, b"keygate sign " + purpose.encode("ascii")),
        text.encode("utf-8"),
        hashlib.sha256,
    )
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_signature(settings: Settings, purpose: str, text: str, signature: str) -> bool:
    return hmac.compare_digest(sign(settings, purpose, text), signature)


def token_hash(settings: Settings, token: str) -> bytes:
    return keyed_hash(settings, b"keygate session", token)


# -- the request's session -------------------------------------------------------------------


async def load_session(request: web.Request) -> BrowserSession:
    """The session of this request (read once per request, then remembered)."""
    if _SESSION in request:
        return request[_SESSION]
    settings = request.app[SETTINGS]
    raw = request.cookies.get(COOKIE, "")
    token = raw if _TOKEN_RE.fullmatch(raw) else None
    user = None
    if token is not None:
        user = await _logged_in_user(request, token_hash(settings, token))
    session = BrowserSession(token, user)
    request[_SESSION] = session
    return session


async def _logged_in_user(request: web.Request, hashed: bytes) -> User | None:
    services = request.app[SERVICES]
    row = await services.store.get_session(hashed)
    if row is None or row.expires_at <= datetime.now(UTC):
        return None
    user = await services.store.get_user(row.user_id)
    # Re-checked on every request: disabling a user logs him out everywhere at once.
    if user is None or user.disabled or user.is_service:
        return None
    return user


async def session_principal(request: web.Request) -> Principal | None:
    """The logged-in user of this request as a Principal (`via="session"`), or None."""
    session = await load_session(request)
    if session.user is None:
        return None
    return principal_of(request, session.user)


def principal_of(request: web.Request, user: User) -> Principal:
    return principal_for(request.app[SERVICES].policy.catalog, user)


def principal_for(catalog: Catalog, user: User) -> Principal:
    """A user acting through a page (not through a key): his current grants are the limit."""
    return Principal.of(
        user_id=user.id,
        email=user.email,
        grants=owner_grants(catalog, user.grants, is_admin=user.is_admin),
        is_admin=user.is_admin,
        via="session",
    )


async def start_session(request: web.Request, user: User) -> BrowserSession:
    """Log `user` in: a brand-new token (never the one the browser came with)."""
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    session = await load_session(request)
    if session.token is not None and session.user is not None:
        await services.store.delete_session(token_hash(settings, session.token))
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    record = Session(
        token_hash(settings, token),
        user.id,
        now,
        now + timedelta(seconds=settings.session_ttl),
    )
    await services.store.create_session(
        record,
        Audit(f"user:{user.id}", "user.login", f"user:{user.id}", {"ip": client_ip(request)}),
    )
    fresh = BrowserSession(token, user, fresh=True)
    request[_SESSION] = fresh
    return fresh


async def end_session(request: web.Request) -> None:
    """Log out: delete the row and hand the browser a new anonymous token."""
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    session = await load_session(request)
    if session.token is not None:
        actor = f"user:{session.user.id}" if session.user else "anonymous"
        await services.store.delete_session(
            token_hash(settings, session.token),
            Audit(actor, "user.logout", actor) if session.user else None,
        )
    request[_SESSION] = BrowserSession(secrets.token_urlsafe(32), None, fresh=True)


# -- CSRF ------------------------------------------------------------------------------------


async def csrf_token(request: web.Request) -> str:
    """The CSRF token for forms on this page; issues an anonymous session if there is none."""
    session = await load_session(request)
    if session.token is None:
        session.token = secrets.token_urlsafe(32)
        session.fresh = True
    return _csrf_for(request.app[SETTINGS], session.token)


async def csrf_valid(request: web.Request, submitted: object) -> bool:
    """Whether `submitted` is this session's CSRF token (constant-time comparison)."""
    session = await load_session(request)
    if session.token is None or not isinstance(submitted, str) or not submitted.isascii():
        return False
    return hmac.compare_digest(_csrf_for(request.app[SETTINGS], session.token), submitted)


def _csrf_for(settings: Settings, token: str) -> str:
    digest = keyed_hash(settings, b"keygate csrf", token)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- the cookie ------------------------------------------------------------------------------


def send_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Attach the session cookie to `response` when this request issued a new token."""
    session = request.get(_SESSION)
    if session is None or not session.fresh or session.token is None:
        return
    settings = request.app[SETTINGS]
    response.set_cookie(
        COOKIE,
        session.token,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=is_secure(request),
        # A login lasts session_ttl; an anonymous token only as long as the browser runs.
        max_age=int(settings.session_ttl) if session.user is not None else None,
    )


def _trusted_peer(request: web.Request) -> bool:
    proxies = request.app[SETTINGS].trusted_proxies
    if not proxies or request.remote is None:
        return False
    try:
        peer = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    return any(peer in net for net in proxies)


def is_secure(request: web.Request) -> bool:
    """Whether the browser reached us over TLS (directly, or via a trusted proxy)."""
    if request.transport is not None and request.transport.get_extra_info("sslcontext"):
        return True
    if _trusted_peer(request):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def client_ip(request: web.Request) -> str:
    """The client's address: the peer, or behind trusted proxies the nearest untrusted hop
    named in X-Forwarded-For (values from untrusted peers are ignored: they are forgeable)."""
    remote = request.remote or "unknown"
    if not _trusted_peer(request):
        return remote
    proxies = request.app[SETTINGS].trusted_proxies
    hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", ()) for h in v.split(",")]
    for hop in reversed(hops):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return remote
        if not any(address in net for net in proxies):
            return str(address)
    return remote

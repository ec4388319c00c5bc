"""Rewriting headers between the client and the upstream: pure functions over (name, value) pairs.

Request direction (client → upstream), in this order:

1. drop every header whose name contains `_` (as nginx does by default): CGI/WSGI-style
   upstreams fold `x_gateway_user` and `X-Gateway-User` into one variable, and names like
   `SCRIPT_NAME` or `PATH_INFO` collide with the server's own, so none of them is safe to pass;
2. drop hop-by-hop headers (RFC 9110 §7.6.1) and the message framing (`Content-Length`,
   `Transfer-Encoding`: the upstream client frames the body itself), `Host` (rewritten to the
   upstream's) and `Expect` (the gateway has already answered `100-continue`);
3. drop every header that re-routes or re-methods the request behind the gateway's back
   (`REROUTING_HEADERS`: `X-Original-URL`, `X-HTTP-Method-Override`, ...), even from a trusted
   proxy, plus the deployment's own list (setting `strip_request_headers`);
4. drop every header the client's `Connection` header names;
5. drop every client-sent `X-Gateway-*` (the gateway's identity headers), the credential
   (`Authorization`, `X-API-KEY`) and, unless the peer is a trusted proxy, every forwarding
   header (`X-Forwarded-For/Proto/Host/Port`, `Forwarded`, `X-Real-IP`);
6. add `X-Forwarded-For/Proto/Host` and the identity headers.

Names are compared case-insensitively. Steps 2, 3 and the fixed part of 5 are one frozenset
(`request_drop`), merged once at start: a request pays one set lookup per header for them.
Because steps 1 to 5 only remove client headers and step 6 runs last, a client can never make
the gateway drop (`Connection: X-Gateway-User`) or pre-empt a header it adds.

Response direction: hop-by-hop headers and those named in the upstream's `Connection` go, and
so does a `Set-Cookie` for the gateway's own login cookie; `Content-Length` stays (it frames
the body the gateway relays unchanged). This side works on the raw fields as received: the fast
front relays the kept ones without decoding them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

Header = tuple[str, str]
Field = tuple[bytes, bytes]  # a raw header field, as an upstream sent it

IDENTITY_PREFIX: Final = "x-gateway-"
USER_HEADER: Final = "X-Gateway-User"
KEY_ID_HEADER: Final = "X-Gateway-Key-Id"
PERMISSIONS_HEADER: Final = "X-Gateway-Permissions"
ASSERTION_HEADER: Final = "X-Gateway-Assertion"
# The gateway's own login cookie (gateway/sessions.py). Upstreams behind the same host never
# see it, and cannot set or overwrite it.
SESSION_COOKIE: Final = "keygate_session"

# RFC 9110 §7.6.1 plus the historical `Proxy-Connection`, which some clients still send.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers the gateway owns on the way out: framing, the target host, and `Expect`.
_NO_TOKENS: Final[frozenset[str]] = frozenset()
_REQUEST_OWNED: Final = frozenset({"content-length", "host", "expect"})
_CREDENTIALS: Final = frozenset({"authorization", "x-api-key"})
# Headers some upstream frameworks obey to serve another path or method than the request
# line's, which is all the gateway authorised: IIS URL Rewrite and Zend (`X-Original-URL`,
# `X-Rewrite-URL`), old Symfony, method-override middleware (Rails, Express, Laravel, ...),
# proxies that pass a path prefix or the original path (Envoy, Traefik, Spring). A trusted
# proxy's copy is dropped too: the gateway decided on the path it was given, not on these.
REROUTING_HEADERS: Final = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-original-method",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-forwarded-uri",
        "x-forwarded-path",
        "x-forwarded-prefix",
        "x-envoy-original-path",
    }
)


def request_drop(extra: Iterable[str] = ()) -> frozenset[str]:
    """Every (lower-case) name `request_headers` drops by name alone, with `extra` (setting
    `strip_request_headers`) added: built once at start and passed to every call."""
    return HOP_BY_HOP | _REQUEST_OWNED | _CREDENTIALS | REROUTING_HEADERS | frozenset(extra)


_REQUEST_DROP: Final = request_drop()
_FORWARDING: Final = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
    }
)


class Origin(NamedTuple):
    """Where a request came from, as the gateway saw it (a named tuple: built per request).

    `client_ip` is the socket peer; `trusted_peer` is true when that peer is a configured
    trusted proxy, whose forwarding headers are then kept and appended to.
    """

    client_ip: str | None
    proto: str
    host: str | None
    trusted_peer: bool = False


class Identity:
    """The authenticated caller, as the upstream is told about it: its header fields are
    rendered once (an identity is cached per key, proxy/forward.py, and sent per request)."""

    __slots__ = ("assertion", "headers", "key_id", "permissions", "user_id")

    def __init__(
        self,
        user_id: str,
        key_id: str | None,
        permissions: tuple[str, ...],
        assertion: str | None = None,  # a signed JWT of the same facts (gateway/assertion.py)
    ) -> None:
        self.user_id = user_id
        self.key_id = key_id
        self.permissions = permissions
        self.assertion = assertion
        headers = [(USER_HEADER, user_id)]
        if key_id is not None:
            headers.append((KEY_ID_HEADER, key_id))
        headers.append((PERMISSIONS_HEADER, " ".join(permissions)))
        if assertion is not None:
            headers.append((ASSERTION_HEADER, assertion))
        self.headers: tuple[Header, ...] = tuple(headers)


def normalise(name: str) -> str:
    """A header name as upstreams may read it: lower case, `_` folded into `-`."""
    return name.lower().replace("_", "-")


def connection_tokens(headers: Iterable[Header]) -> frozenset[str]:
    """The (normalised) header names listed in `Connection` headers, beyond those always dropped.

    `keep-alive` and `close`, by far the most common tokens, name nothing extra to remove.
    """
    tokens: frozenset[str] = _NO_TOKENS
    for name, value in headers:
        # The length test keeps this pass cheap: it runs over every header of every request.
        if (
            len(name) in (10, 16)
            and normalise(name) in ("connection", "proxy-connection")
            and value.lower() not in _PLAIN_CONNECTION
        ):
            tokens = tokens | _listed(value)
    return tokens


# The usual `Connection` values, which name nothing to remove: no need to take them apart.
_PLAIN_CONNECTION: Final = frozenset({"keep-alive", "close"})
_PLAIN_CONNECTION_RAW: Final = frozenset({b"keep-alive", b"close"})


def _listed(value: str) -> frozenset[str]:
    """The names one `Connection` value lists, less `close` and those always dropped."""
    named = (normalise(token.strip()) for token in value.split(","))
    return frozenset(key for key in named if key and key != "close" and key not in HOP_BY_HOP)


def request_headers(
    headers: Iterable[Header],
    origin: Origin,
    identity: Identity | None,
    drop: frozenset[str] = _REQUEST_DROP,
) -> list[Header]:
    """The headers to send upstream for a client request (see the module docstring); `drop`
    is `request_drop(...)` of the deployment's extra names."""
    incoming = headers if isinstance(headers, list) else list(headers)
    named = connection_tokens(incoming)
    out: list[Header] = []
    forwarded_for: list[str] = []
    proto = origin.proto
    host = origin.host
    for name, value in incoming:
        if "_" in name:
            continue
        key = name.lower()
        if key in drop or key in named or key.startswith(IDENTITY_PREFIX):
            continue
        if key == "cookie":
            value = _without_session_cookie(value)
            if not value:
                continue
        elif key in _FORWARDING:
            if origin.trusted_peer:
                if key == "x-forwarded-for":
                    forwarded_for.append(value)
                elif key == "x-forwarded-proto":
                    proto = value
                elif key == "x-forwarded-host":
                    host = value
                else:
                    out.append((name, value))
            continue
        out.append((name, value))
    if origin.client_ip is not None:
        forwarded_for.append(origin.client_ip)
    if forwarded_for:
        out.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    out.append(("X-Forwarded-Proto", proto))
    if host:
        out.append(("X-Forwarded-Host", host))
    if identity is not None:
        out.extend(identity.headers)
    return out


_HOP_BY_HOP_RAW = frozenset(name.encode() for name in HOP_BY_HOP)
# The gateway answers with its own request id (gateway/access.py), never the upstream's.
_RESPONSE_DROP_RAW: Final = _HOP_BY_HOP_RAW | {b"x-request-id"}
_CONNECTION_RAW: Final = (b"connection", b"proxy-connection")
_SESSION_COOKIE_RAW: Final = SESSION_COOKIE.encode()
# `normalise` for raw names in one C call: A-Z to lower case, `_` to `-`. (A `b"_" in name`
# test would cost more than the whole translation: bytes containment tries int first.)
_FOLD_RAW: Final = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_", b"abcdefghijklmnopqrstuvwxyz-")


def response_fields(fields: list[Field]) -> list[Field]:
    """The upstream's response header fields the client may see, raw and in order."""
    named = _NO_TOKENS
    for name, value in fields:
        if (
            len(name) in (10, 16)
            and name.lower() in _CONNECTION_RAW
            and value.lower() not in _PLAIN_CONNECTION_RAW
        ):
            named = named | _listed(value.decode("latin-1"))
    out: list[Field] = []
    for name, value in fields:
        key = name.translate(_FOLD_RAW)
        if key in _RESPONSE_DROP_RAW or (named and key.decode("ascii") in named):
            continue
        if key == b"set-cookie" and value.partition(b"=")[0].strip() == _SESSION_COOKIE_RAW:
            continue  # an upstream may not set (or clear) the gateway's login cookie
        out.append((name, value))
    return out


def _without_session_cookie(value: str) -> str:
    if SESSION_COOKIE not in value:
        return value
    kept = [
        pair
        for pair in value.split(";")
        if pair.strip().partition("=")[0].strip() != SESSION_COOKIE
    ]
    return ";".join(kept).strip()

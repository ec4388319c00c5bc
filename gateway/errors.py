"""One error tree for every surface. Status codes are chosen here and nowhere else: the
policy, the upstream client and the HTTP/1.1 core name what went wrong, and `denial_error`,
`upstream_error` and `protocol_error` below turn that into an error of this tree.

::

    GatewayError                      code, message, status, headers
    ├── BadRequest            400     malformed request (bad target, two credentials, ...)
    ├── Unauthenticated       401     no usable credential; carries WWW-Authenticate
    ├── Forbidden             403     authenticated, not allowed (missing-permission, path rule)
    ├── NotFound              404     no such route / user / key (or not yours)
    ├── RequestTimeout        408     the client's head or body did not arrive in time
    ├── Conflict              409     a unique value exists already
    ├── PayloadTooLarge       413
    ├── Invalid               422     a body that does not validate; carries [(path, message)]
    ├── TooManyRequests       429     throttled; carries Retry-After
    ├── HeadTooLarge          431     the request head, a field or the field count is over a limit
    ├── NotImplementedHere    501     a method the gateway does not serve (CONNECT)
    ├── BadGateway            502     upstream refused or broke the connection
    ├── Unavailable           503     database (and cache) unreachable: never fail open
    ├── GatewayTimeout        504     upstream too slow
    └── VersionNotSupported   505     not HTTP/1.x on an HTTP/1.1 port

Each surface renders the same error its own way: problem+json on the data plane and the
`/v1` API, `{code, message}` on Greenfield, an HTML page for people.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.proxy.h1.errors import (
    HeadTooLarge as HeadOverLimit,
)
from gateway.proxy.h1.errors import (
    ProtocolError,
    TooManyFields,
    UnsupportedVersion,
)
from gateway.proxy.upstream_http import ClientRequestError, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:  # only read, never built here: no runtime dependency on the policy
    from gateway.policy.evaluate import Denied
    from gateway.policy.pathrule import PathRule

PROBLEM_JSON = "application/problem+json"
WWW_AUTHENTICATE = 'Bearer realm="keygate", Basic realm="keygate", charset="UTF-8"'


class GatewayError(Exception):
    status = 500
    code = "internal-error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(GatewayError):
    status = 400
    code = "bad-request"


class Unauthenticated(GatewayError):
    status = 401
    code = "unauthenticated"

    def __init__(self, message: str, *, code: str | None = None, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": WWW_AUTHENTICATE})
        super().__init__(message, code=code, **kw)


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not-found"


class RequestTimeout(GatewayError):
    status = 408
    code = "request-timeout"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload-too-large"


class HeadTooLarge(GatewayError):
    status = 431
    code = "head-too-large"


class Invalid(GatewayError):
    status = 422
    code = "validation-failed"

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{p}: {m}" for p, m in self.errors))


class TooManyRequests(GatewayError):
    status = 429
    code = "too-many-requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class NotImplementedHere(GatewayError):
    status = 501
    code = "not-implemented"


class BadGateway(GatewayError):
    status = 502
    code = "bad-gateway"


class Unavailable(GatewayError):
    status = 503
    code = "unavailable"


class GatewayTimeout(GatewayError):
    status = 504
    code = "gateway-timeout"


class VersionNotSupported(GatewayError):
    status = 505
    code = "http-version-not-supported"


# -- what other layers name, as errors of this tree ------------------------------------------

# Denial reasons (policy/evaluate.py) that are not a 403.
_NO_ROUTE = frozenset({"no-route", "method-not-allowed"})


def denial_error(denied: Denied, path_rule: PathRule | None = None) -> GatewayError:
    """The error for a policy denial, naming what failed: the permission or the key's path
    rule (`path_rule`, the caller's own, so showing it tells him nothing new)."""
    extra: dict[str, str] = {}
    if denied.missing is not None:
        extra["missingPermission"] = str(denied.missing)
    if denied.reason == "path-not-allowed" and path_rule is not None:
        extra["allowedPath"] = str(path_rule)
    reason = denied.reason
    if reason == "unauthenticated":
        return Unauthenticated(denied.detail, code=reason, extra=extra)
    if reason in _NO_ROUTE:
        return NotFound(denied.detail, code=reason, extra=extra)
    if reason == "no-requirement":  # a policy the loader should have refused: never allow
        return GatewayError(denied.detail, code=reason, extra=extra)
    return Forbidden(denied.detail, code=reason, extra=extra)


def upstream_error(exc: UpstreamError) -> GatewayError:
    """The error for a failed upstream exchange (proxy/upstream_http.py's tree), before any
    of the response reached the client."""
    if isinstance(exc, UpstreamTimeout):
        return GatewayTimeout(str(exc))
    if isinstance(exc, ClientRequestError):
        return BadRequest(str(exc), code="bad-client-request")
    return BadGateway(str(exc))


def protocol_error(exc: ProtocolError) -> GatewayError:
    """The error for a client's bytes the HTTP/1.1 core refused (proxy/h1/errors.py's tree);
    the connection closes after the answer."""
    if isinstance(exc, TooManyFields):
        return HeadTooLarge(str(exc), code="too-many-headers")
    if isinstance(exc, HeadOverLimit):
        return HeadTooLarge(str(exc))
    if isinstance(exc, UnsupportedVersion):
        return VersionNotSupported(str(exc))
    return BadRequest(str(exc))  # MalformedMessage, BadChunk


# -- rendering --------------------------------------------------------------------------------


def problem(error: GatewayError, instance: str | None = None) -> dict[str, Any]:
    """RFC 9457 problem details for an error."""
    body: dict[str, Any] = {
        "type": f"urn:keygate:problem:{error.code}",
        "title": error.code.replace("-", " ").capitalize(),
        "status": error.status,
        "detail": error.message,
        "code": error.code,
    }
    if instance is not None:
        body["instance"] = instance
    if isinstance(error, Invalid):
        body["errors"] = [{"path": p, "message": m} for p, m in error.errors]
    body.update(error.extra)
    return body


def problem_parts(
    error: GatewayError, instance: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a data-plane problem+json answer, one rendering for both
    servers (the aiohttp handler and the fast front)."""
    headers = {"Content-Type": PROBLEM_JSON, "Cache-Control": "no-store", **error.headers}
    return error.status, headers, json.dumps(problem(error, instance)).encode()

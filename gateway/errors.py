"""One error tree for every surface. Status codes are chosen here and nowhere else.

::

    GatewayError                      code, message, status, headers
    ├── BadRequest            400     malformed request (bad target, two credentials, ...)
    ├── Unauthenticated       401     no usable credential; carries WWW-Authenticate
    ├── Forbidden             403     authenticated, not allowed (missing-permission, path rule)
    ├── NotFound              404     no such route / user / key (or not yours)
    ├── RequestTimeout        408     the client's head or body did not arrive in time
    ├── Conflict              409     a unique value exists already
    ├── PayloadTooLarge       413
    ├── HeadTooLarge          431     the request head, a field or the field count is over a limit
    ├── Invalid               422     a body that does not validate; carries [(path, message)]
    ├── TooManyRequests       429     throttled; carries Retry-After
    ├── BadGateway            502     upstream refused or broke the connection
    ├── Unavailable           503     database (and cache) unreachable: never fail open
    ├── GatewayTimeout        504     upstream too slow
    └── VersionNotSupported   505     an HTTP version other than 1.0 and 1.1

Each surface renders the same error its own way: problem+json on the data plane and the
`/v1` API, `{code, message}` on Greenfield, an HTML page for people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.proxy.h1 import errors as h1

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

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


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


def protocol_error(exc: h1.ProtocolError) -> GatewayError:
    """The answer to bytes the HTTP/1.1 core could not frame (gateway/proxy/h1/errors.py)."""
    message = str(exc)
    if isinstance(exc, h1.TooManyFields):
        return HeadTooLarge(message, code="too-many-headers")
    if isinstance(exc, h1.HeadTooLarge):
        return HeadTooLarge(message)
    if isinstance(exc, h1.UnsupportedVersion):
        return VersionNotSupported(message)
    return BadRequest(message)


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

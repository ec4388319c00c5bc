"""Responses of the gateway's own APIs: JSON bodies and one error renderer per surface.

* Greenfield (`/api/v1/...`): `{code, message}` (plus `missingPermission` on a missing
  permission); a body that does not validate is a 422 with `[{path, message}]`; every 401 has
  the code `unauthenticated`, as BTCPay answers, with the precise reason in `message`.
* `/v1/...` (Buckaroo-style keys and admin): RFC 9457 problem+json (`errors.problem`).

Every API handler runs inside `endpoint(surface)`, which turns the error tree, aiohttp's own
HTTP exceptions (413 from a body read, ...) and anything unexpected into that surface's JSON:
these paths never answer HTML or a stack trace. Handlers are wrapped one by one instead of by
an application middleware so that the data plane, which shares the application, pays nothing.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

from aiohttp import web

from gateway.errors import GatewayError, Invalid, Unavailable, problem
from gateway.store.base import StoreError

log = logging.getLogger("gateway.api")

Surface = Literal["greenfield", "problem"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
# Bodies can hold a freshly minted key: no cache, shared or private, may keep one.
NO_STORE = {"Cache-Control": "no-store"}

_HTTP_CODES = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return web.Response(
        status=status,
        body=body,
        headers={"Content-Type": f"{JSON}; charset=utf-8", **NO_STORE, **(headers or {})},
    )


def greenfield_body(error: GatewayError) -> Any:
    if isinstance(error, Invalid):
        return [{"path": path, "message": message} for path, message in error.errors]
    code = "unauthenticated" if error.status == 401 else error.code
    return {**error.extra, "code": code, "message": error.message}


def error_response(surface: Surface, error: GatewayError, instance: str) -> web.Response:
    if surface == "greenfield":
        response = json_response(greenfield_body(error), status=error.status)
    else:
        body = json.dumps(problem(error, instance), ensure_ascii=False).encode("utf-8")
        response = web.Response(
            status=error.status,
            body=body,
            headers={"Content-Type": f"{PROBLEM_JSON}; charset=utf-8", **NO_STORE},
        )
    response.headers.update(error.headers)
    return response


def http_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> GatewayError:
    """An error of any status for which the tree has no class (405, 415, aiohttp's own)."""
    error = GatewayError(message, code=_HTTP_CODES.get(status, f"http-{status}"), headers=headers)
    error.status = status
    return error


def endpoint(surface: Surface) -> Callable[[Handler], Handler]:
    """Run a handler so that whatever goes wrong is answered in `surface`'s JSON shape."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except GatewayError as exc:
                return error_response(surface, exc, request.path)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                error = http_error(exc.status, exc.reason)
                return error_response(surface, error, request.path)
            except StoreError as exc:
                # The store's messages never hold secrets; the class name is enough here.
                log.error("store failure on %s %s: %s", request.method, handler.__name__, exc)
                unavailable = Unavailable("the database is unavailable; try again shortly")
                return error_response(surface, unavailable, request.path)
            except Exception:
                # The traceback goes to the log (it holds no request data); the client gets
                # one sentence. Never the path: a Greenfield path may carry a whole key.
                log.exception("unexpected error in %s %s", request.method, handler.__name__)
                internal = GatewayError("an unexpected error occurred; it has been logged")
                return error_response(surface, internal, request.path)

        return run

    return wrap


def method_not_allowed(surface: Surface, allowed: Iterable[str]) -> Handler:
    """The handler for every other method on an API path: a 405 in the surface's shape."""
    allow = ", ".join(sorted(set(allowed)))

    @endpoint(surface)
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise http_error(
            405, f"{request.method} is not allowed here (use {allow})", {"Allow": allow}
        )

    return refuse


def add_routes(
    app: web.Application, surface: Surface, path: str, handlers: Mapping[str, Handler]
) -> None:
    """Register `handlers` (method -> handler) on `path`, and a 405 for every other method,
    so the data plane's catch-all never answers for an API path."""
    resource = app.router.add_resource(path)
    allowed = set(handlers)
    for method, handler in handlers.items():
        wrapped = endpoint(surface)(handler)
        resource.add_route(method, wrapped)
        if method == "GET":
            resource.add_route("HEAD", wrapped)
            allowed.add("HEAD")
    resource.add_route("*", method_not_allowed(surface, allowed))

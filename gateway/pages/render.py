"""Rendering pages: templates, security headers, errors as readable pages, the page wrapper.

Every page answers with the same protective headers:

* a Content-Security-Policy that allows nothing from elsewhere (no CDN, font or analytics can
  load), scripts only from this server or inline with this response's nonce, forms only to
  this server (the hand-off page to the redirect's origin instead), and no framing
  (`frame-ancestors 'none'`, plus `X-Frame-Options: DENY` for older browsers);
* `Cache-Control: no-store` (pages carry CSRF tokens, key lists, once-shown keys);
* `Referrer-Policy: no-referrer` and `X-Content-Type-Options: nosniff`.

`page(handler)` wraps each handler: a GatewayError becomes an error page with its status,
a storage failure a 503 page, and a new session token is sent as a cookie.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from gateway import sessions
from gateway.errors import GatewayError, Invalid, PayloadTooLarge, Unavailable
from gateway.pages.form import FORM_TYPES, read_fields
from gateway.store.base import StoreError

log = logging.getLogger("gateway.pages")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC_PREFIX = "/_keygate/static"


def content_security_policy(nonce: str, form_action: str = "'self'") -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self'",
            "img-src 'self'",
            "connect-src 'self'",
            f"form-action {form_action}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


def security_headers(nonce: str, form_action: str = "'self'") -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(nonce, form_action),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
    }


async def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    form_action: str = "'self'",
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Render `template` with the common context (user, CSRF token, nonce)."""
    session = await sessions.load_session(request)
    nonce = secrets.token_urlsafe(16)
    full = {
        "user": session.user,
        "csrf": await sessions.csrf_token(request),
        "nonce": nonce,
        "static": STATIC_PREFIX,
        "path": request.path,
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, full, status=status)
    response.headers.update(security_headers(nonce, form_action))
    if headers:
        response.headers.update(headers)
    return response


def see_other(location: str) -> web.Response:
    """A 303 redirect to a path of this server (after a POST, the browser GETs it)."""
    return web.Response(
        status=303, headers={"Location": location, "Cache-Control": "no-store"}, text=""
    )


async def error_page(request: web.Request, error: GatewayError) -> web.Response:
    details = error.errors if isinstance(error, Invalid) else []
    return await render(
        request,
        "error.html",
        {
            "status": error.status,
            "title": TITLES.get(error.status, "Something went wrong"),
            "message": error.message if not details else "The request is not valid.",
            "details": details,
        },
        status=error.status,
        headers=error.headers,
    )


TITLES = {
    400: "This request cannot be used",
    403: "Not allowed",
    404: "Not found",
    409: "Already exists",
    413: "Too large",
    422: "Please check the form",
    429: "Too many attempts",
    503: "Temporarily unavailable",
}


def page(handler: Handler) -> Handler:
    """Wrap a page handler: errors become readable pages; a new session sets its cookie."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except GatewayError as exc:
            response = await error_page(request, exc)
        except web.HTTPRequestEntityTooLarge:
            response = await error_page(request, PayloadTooLarge("the form is too large"))
        except StoreError as exc:
            log.warning("page %s: storage failed: %s", request.path, type(exc).__name__)
            response = await _unavailable(request)
        sessions.send_cookie(request, response)
        return response

    return wrapped


async def _unavailable(request: web.Request) -> web.Response:
    # The session itself may be what failed to load: render without touching the store.
    nonce = secrets.token_urlsafe(16)
    error = Unavailable("The service cannot reach its database. Please try again shortly.")
    response = aiohttp_jinja2.render_template(
        "error.html",
        request,
        {
            "user": None,
            "csrf": "",
            "nonce": nonce,
            "static": STATIC_PREFIX,
            "path": request.path,
            "status": 503,
            "title": TITLES[503],
            "message": error.message,
            "details": [],
        },
        status=503,
    )
    response.headers.update(security_headers(nonce))
    return response


async def read_form(request: web.Request) -> dict[str, list[str]]:
    """The POSTed form's text fields (files and other parts are ignored)."""
    out: dict[str, list[str]] = {}
    if request.content_type not in FORM_TYPES:
        return out
    for name, value in await read_fields(request):
        out.setdefault(name, []).append(value)
    return out


def first(form: Mapping[str, list[str]], name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0] if values else default

"""Logging in and out.

The failure message is the same whether or not the email has an account, and
`UserService.authenticate` does the same Argon2id work either way. Failures are counted per
client address and per account (`gateway/throttle.py`); past the limit the login answers a
429 page with `Retry-After` before checking the password at all.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from gateway import sessions
from gateway.errors import TooManyRequests
from gateway.pages.render import first, read_form, render, see_other
from gateway.state import SERVICES

LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
HOME = "/account/api-keys"
MAX_EMAIL = 320
BAD_CREDENTIALS = "The email or password is wrong."
_LOCAL_PATH = re.compile(r"/(?![/\\])[\x21-\x7e]{0,8191}")


def safe_next(raw: str | None) -> str:
    """Where to go after logging in: a path on this server, or the key list.

    Only `/path...`: never `//host` or `/\\host` (which browsers read as another host), never
    a scheme, never a control character. So the login page cannot become an open redirect.
    """
    if raw and _LOCAL_PATH.fullmatch(raw) and "\\" not in raw:
        return raw
    return HOME


def login_url(next_path: str) -> str:
    return f"{LOGIN_PATH}?next={quote(next_path, safe='')}"


async def login_form(request: web.Request) -> web.StreamResponse:
    session = await sessions.load_session(request)
    next_path = safe_next(request.query.get("next"))
    if session.user is not None:
        return see_other(next_path)
    return await render(request, "login.html", {"next": next_path, "email": "", "error": None})


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    next_path = safe_next(first(form, "next"))
    email = first(form, "email").strip()[:MAX_EMAIL]
    password = first(form, "password")

    async def again(error: str, status: int = 200) -> web.Response:
        context = {"next": next_path, "email": email, "error": error}
        return await render(request, "login.html", context, status=status)

    if not await sessions.csrf_valid(request, first(form, "csrf")):
        return await again("This form had expired. Please log in again.", status=400)
    if not email or not password:
        return await again("Enter your email and password.")

    try:
        user = await request.app[SERVICES].check_password(
            email, password, sessions.client_ip(request)
        )
    except TooManyRequests as exc:
        wait = exc.headers.get("Retry-After", "a few")
        raise TooManyRequests(
            f"Too many failed logins. Please wait {wait} seconds and try again.",
            retry_after=int(wait) if wait.isdigit() else 60,
        ) from None
    if user is None:
        return await again(BAD_CREDENTIALS)
    await sessions.start_session(request, user)
    return see_other(next_path)


async def logout(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    if await sessions.csrf_valid(request, first(form, "csrf")):
        await sessions.end_session(request)
    return see_other(LOGIN_PATH)

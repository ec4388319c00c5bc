"""Login, logout and sessions of the hosted pages, through the real app on SQLite."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.app import create_app
from gateway.sessions import COOKIE, session_principal
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.e2e.support import PASSWORD, form, login, make_user


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str) -> Any:
    app = create_app(make_settings(sqlite_url, login_max_failures=3))
    client = await aiohttp_client(app)
    await make_user(client.app[SERVICES], "alice@example.com", grants=["demo.reports.read"])
    return client


def _session_cookie(client: Any) -> str | None:
    for cookie in client.session.cookie_jar:
        if cookie.key == COOKIE:
            return str(cookie.value)
    return None


async def test_login_page_has_csrf_and_protective_headers(client: Any) -> None:
    """The login form carries a CSRF token and the page forbids framing and caching."""
    response = await client.get("/login")
    assert response.status == 200
    assert form(await response.text(), "/login").value("csrf")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http from an untrusted peer


async def test_login_issues_a_fresh_session_token(client: Any) -> None:
    """Logging in replaces the pre-login token (no session fixation)."""
    page = await client.get("/login")
    before = _session_cookie(client)
    data = form(await page.text(), "/login").data(email="alice@example.com", password=PASSWORD)
    response = await client.post("/login", data=data, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/account/api-keys"
    after = _session_cookie(client)
    assert before
    assert after
    assert before != after
    assert "Max-Age" in response.headers["Set-Cookie"]


async def test_wrong_password_and_unknown_email_read_the_same(client: Any) -> None:
    """A failed login does not reveal whether the email has an account."""
    texts = []
    for email in ("alice@example.com", "nobody@example.com"):
        page = await client.get("/login")
        data = form(await page.text(), "/login").data(email=email, password="wrong password")
        response = await client.post("/login", data=data)
        assert response.status == 200
        body = await response.text()
        assert "The email or password is wrong." in body
        texts.append(body.replace(email, "EMAIL"))
    assert texts[0].split('name="csrf"')[0] == texts[1].split('name="csrf"')[0]


@pytest.mark.parametrize("token", [None, "forged-token"])
async def test_login_without_a_valid_csrf_token_is_refused(client: Any, token: str | None) -> None:
    """A login POST without (or with a wrong) CSRF token logs nobody in."""
    await client.get("/login")
    data = {"email": "alice@example.com", "password": PASSWORD}
    if token:
        data["csrf"] = token
    response = await client.post("/login", data=data, allow_redirects=False)
    assert response.status == 400
    assert "expired" in await response.text()
    keys = await client.get("/account/api-keys", allow_redirects=False)
    assert keys.status == 303


async def test_brute_force_gets_429_even_with_the_right_password(client: Any) -> None:
    """After N failures the account is throttled: a readable 429 page with Retry-After."""
    for _ in range(3):
        page = await client.get("/login")
        data = form(await page.text(), "/login").data(email="alice@example.com", password="nope")
        assert (await client.post("/login", data=data)).status == 200
    page = await client.get("/login")
    data = form(await page.text(), "/login").data(email="ALICE@example.com", password=PASSWORD)
    response = await client.post("/login", data=data, allow_redirects=False)
    assert response.status == 429
    assert int(response.headers["Retry-After"]) > 0
    body = await response.text()
    assert "Too many failed logins" in body
    assert "<html" in body


async def test_service_and_disabled_users_cannot_log_in(client: Any) -> None:
    """Service users (no password) and disabled users are refused like a wrong password."""
    services = client.app[SERVICES]
    await make_user(services, "robot@example.com", service=True)
    bob = await make_user(services, "bob@example.com")
    await services.users.set_disabled(bob, True, actor="test")
    for email in ("robot@example.com", "bob@example.com"):
        page = await client.get("/login")
        data = form(await page.text(), "/login").data(email=email, password=PASSWORD)
        response = await client.post("/login", data=data, allow_redirects=False)
        assert response.status == 200
        assert "The email or password is wrong." in await response.text()


async def test_logout_ends_the_session_everywhere(client: Any) -> None:
    """After logout the old session token no longer logs anyone in."""
    await login(client)
    old = _session_cookie(client)
    page = await client.get("/account/api-keys")
    assert page.status == 200
    data = form(await page.text(), "/logout").data()
    response = await client.post("/logout", data=data, allow_redirects=False)
    assert response.status == 303
    client.session.cookie_jar.update_cookies({COOKIE: old})
    again = await client.get("/account/api-keys", allow_redirects=False)
    assert again.status == 303
    assert again.headers["Location"].startswith("/login")


async def test_disabling_a_user_ends_his_session(client: Any) -> None:
    """A disabled user's open session stops working at the next request."""
    await login(client)
    services = client.app[SERVICES]
    alice = await services.users.find("alice@example.com")
    await services.users.set_disabled(alice, True, actor="test")
    response = await client.get("/account/api-keys", allow_redirects=False)
    assert response.status == 303


@pytest.mark.parametrize(
    "next_path", ["//evil.example/x", "/\\evil.example", "https://evil.example/", "javascript:1"]
)
async def test_login_never_redirects_off_site(client: Any, next_path: str) -> None:
    """`next` is only ever a path on this server."""
    page = await client.get("/login", params={"next": next_path})
    data = form(await page.text(), "/login").data(email="alice@example.com", password=PASSWORD)
    response = await client.post("/login", data=data, allow_redirects=False)
    assert response.headers["Location"] == "/account/api-keys"


async def test_session_principal_is_the_logged_in_user(client: Any) -> None:
    """`session_principal` gives other surfaces the page user, via="session"."""
    await login(client)
    cookie = f"{COOKIE}={_session_cookie(client)}"
    request = make_mocked_request("GET", "/v1/apikeys", headers={"Cookie": cookie}, app=client.app)
    principal = await session_principal(request)
    assert principal is not None
    assert principal.email == "alice@example.com"
    assert principal.via == "session"
    anonymous = make_mocked_request("GET", "/v1/apikeys", app=client.app)
    assert await session_principal(anonymous) is None


async def test_cookie_is_secure_behind_a_trusted_tls_proxy(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """Behind a trusted proxy saying X-Forwarded-Proto: https the cookie is Secure."""
    settings = make_settings(sqlite_url, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in response.headers["Set-Cookie"]
    plain = await client.get("/login", headers={"X-Forwarded-Proto": "http"})
    assert "Secure" not in plain.headers.get("Set-Cookie", "")

"""The /api-keys/authorize consent flow, through the real app on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from gateway.app import create_app
from gateway.errors import Unauthenticated
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.e2e.support import PASSWORD, Form, add_store, form, login, make_user

CALLBACK = "https://app.example/callback"


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str) -> Any:
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    services = client.app[SERVICES]
    await make_user(
        services,
        "alice@example.com",
        grants=["demo.reports.read", "demo.store.canviewinvoices"],
    )
    await add_store(services, "S1", "Main shop")
    await add_store(services, "S2", "Outlet")
    await login(client)
    return client


def url(*pairs: tuple[str, str]) -> str:
    return "/api-keys/authorize?" + urlencode(pairs)


async def consent(client: Any, *pairs: tuple[str, str]) -> tuple[Any, Form]:
    response = await client.get(url(*pairs), allow_redirects=False)
    assert response.status == 200, await response.text()
    return response, form(await response.text(), "/api-keys/authorize")


async def keys_of(client: Any, email: str = "alice@example.com") -> list[Any]:
    user = await client.app[SERVICES].users.find(email)
    return list(await client.app[SERVICES].keys.list_for(user.id))


def handoff_fields(html: str, action: str = CALLBACK) -> list[tuple[str, str]]:
    return form(html, action).fields


BAD_REDIRECTS = [
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http://evil.com",
    "https://user@host.example/cb",
    "https://host.example/#frag",
    "https:\\\\evil.com",
    "https://host.example/\r\nSet-Cookie: x=1",
    "https://host.example/\x00",
]


@pytest.mark.parametrize("redirect", BAD_REDIRECTS)
async def test_bad_redirects_get_an_error_page_and_no_redirect(client: Any, redirect: str) -> None:
    """A refused redirect is a 400 page on this server; the browser is sent nowhere."""
    response = await client.get(url(("redirect", redirect)), allow_redirects=False)
    assert response.status == 400
    assert "Location" not in response.headers
    body = await response.text()
    assert "redirect" in body
    assert "<script>alert" not in body


async def test_logged_out_visitors_log_in_and_come_back(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """Not logged in → login page → the same authorize request afterwards."""
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    await make_user(client.app[SERVICES], "alice@example.com", grants=["demo.reports.read"])
    target = url(("applicationName", "Gozo"), ("permissions", "demo.reports.read"))
    response = await client.get(target, allow_redirects=False)
    assert response.status == 303
    login_page = await client.get(response.headers["Location"])
    login_form = form(await login_page.text(), "/login")
    assert login_form.value("next") == target
    after = await client.post(
        "/login",
        data=login_form.data(email="alice@example.com", password=PASSWORD),
        allow_redirects=False,
    )
    assert after.headers["Location"] == target


async def test_application_name_is_escaped(client: Any) -> None:
    """applicationName=<script>… is shown as text, never run."""
    response, _ = await consent(client, ("applicationName", "<script>alert(1)</script>"))
    body = await response.text()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


async def test_no_permissions_says_the_key_only_proves_the_account(client: Any) -> None:
    """An empty request explains that the key can only prove the account exists."""
    response, consent_form = await consent(client)
    assert "can only prove that your account exists" in await response.text()
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize")
    )
    assert response.status == 201
    assert (await keys_of(client))[0].permissions == ()


async def test_page_headers_forbid_framing(client: Any) -> None:
    """The consent page cannot be framed (CSP frame-ancestors and X-Frame-Options)."""
    response, _ = await consent(client, ("permissions", "demo.reports.read"))
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_strict_consent_posts_the_key_to_the_redirect(client: Any) -> None:
    """Consent → an auto-submitting form POSTing apiKey, userId, permissions[] to redirect."""
    _, consent_form = await consent(
        client,
        ("applicationName", "Gozo"),
        ("redirect", CALLBACK),
        ("applicationIdentifier", "gozo"),
        ("permissions", "demo.reports.read"),
    )
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize")
    )
    assert response.status == 200
    csp = response.headers["Content-Security-Policy"]
    assert "form-action https://app.example;" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.text()
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in body
    fields = dict(handoff_fields(body))
    alice = (await client.app[SERVICES].users.find("alice@example.com")).id
    assert fields["userId"] == alice
    assert fields["permissions[]"] == "demo.reports.read"
    verified = await client.app[SERVICES].verifier.verify(fields["apiKey"])
    assert verified.user_id == alice
    [key] = await keys_of(client)
    assert key.application_identifier == "gozo"
    assert key.redirect_origin == "https://app.example"
    assert key.label == "Gozo"


async def test_strict_ignores_permissions_added_to_the_form(client: Any) -> None:
    """A tampered strict consent POST cannot add permissions."""
    _, consent_form = await consent(client, ("permissions", "demo.reports.read"))
    data = consent_form.data(decision="authorize", permission=["demo.store.canviewinvoices"])
    response = await client.post("/api-keys/authorize", data=data)
    assert response.status == 201
    [key] = await keys_of(client)
    assert key.permissions == ("demo.reports.read",)


async def test_a_changed_request_field_is_refused(client: Any) -> None:
    """The signed request cannot be edited (e.g. strict=true turned into strict=false)."""
    _, consent_form = await consent(client, ("permissions", "demo.reports.read"))
    tampered = consent_form.value("request").replace("demo.reports.read", "demo.legacy.access")
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize", request=tampered)
    )
    assert response.status == 400
    assert await keys_of(client) == []


@pytest.mark.parametrize("csrf", [None, "wrong"])
async def test_consent_without_valid_csrf_creates_nothing(client: Any, csrf: str | None) -> None:
    """A consent POST without (or with a wrong) CSRF token is refused."""
    _, consent_form = await consent(client, ("permissions", "demo.reports.read"))
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize", csrf=csrf)
    )
    assert response.status == 403
    assert await keys_of(client) == []


async def test_logged_out_consent_post_creates_nothing(client: Any) -> None:
    """After logging out, replaying the consent POST creates no key."""
    page, consent_form = await consent(client, ("permissions", "demo.reports.read"))
    logout = form(await page.text(), "/logout")
    await client.post("/logout", data=logout.data())
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize"), allow_redirects=False
    )
    assert response.status in (303, 403)
    assert await keys_of(client) == []


async def test_strict_request_for_unheld_permission_blocks(client: Any) -> None:
    """Requested permissions the user lacks are shown unavailable and block a strict consent."""
    response, consent_form = await consent(
        client, ("permissions", "demo.reports.read"), ("permissions", "demo.legacy.access")
    )
    body = await response.text()
    assert "you do not hold this" in body
    assert 'value="authorize" class="button primary" disabled' in body
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize")
    )
    assert response.status == 403
    assert await keys_of(client) == []


async def test_non_strict_lets_the_user_remove_and_add(client: Any) -> None:
    """strict=false: untick a requested permission, tick another the user holds."""
    _, consent_form = await consent(
        client,
        ("permissions", "demo.reports.read"),
        ("permissions", "demo.legacy.access"),
        ("strict", "false"),
    )
    boxes = {name_value[1]: name_value for name_value in consent_form.boxes}
    assert boxes["demo.legacy.access"][3]  # disabled: not held
    assert "demo.store.canviewinvoices" in boxes
    response = await client.post(
        "/api-keys/authorize",
        data=consent_form.data(decision="authorize", permission=["demo.store.canviewinvoices"]),
    )
    assert response.status == 201
    [key] = await keys_of(client)
    assert key.permissions == ("demo.store.canviewinvoices",)


async def test_selective_stores_scopes_to_the_picked_store(client: Any) -> None:
    """selectiveStores=true: the user picks stores; store permissions are scoped to them."""
    response, consent_form = await consent(
        client,
        ("permissions", "demo.store.canviewinvoices"),
        ("permissions", "demo.reports.read"),
        ("selectiveStores", "True"),
    )
    assert "Which stores?" in await response.text()
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize", store="S2")
    )
    assert response.status == 201
    [key] = await keys_of(client)
    assert set(key.permissions) == {"demo.reports.read", "demo.store.canviewinvoices:S2"}


async def test_cancel_creates_nothing_and_returns_to_the_list(client: Any) -> None:
    """Cancel creates no key and goes back to the key list."""
    _, consent_form = await consent(
        client, ("redirect", CALLBACK), ("permissions", "demo.reports.read")
    )
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="cancel"), allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/account/api-keys"
    assert await keys_of(client) == []


async def test_reauthorizing_replaces_the_key_of_the_same_app_and_origin(client: Any) -> None:
    """Same identifier and origin: the page offers replacement, which rotates the old key: it
    works for `reauthorize_grace` (24 h) more, and the POST-back says until when."""
    request = (
        ("applicationName", "Gozo"),
        ("redirect", CALLBACK),
        ("applicationIdentifier", "gozo"),
        ("permissions", "demo.reports.read"),
    )
    _, first = await consent(client, *request)
    await client.post("/api-keys/authorize", data=first.data(decision="authorize"))
    [old] = await keys_of(client)

    response, second = await consent(client, *request)
    assert "already has a key" in await response.text()
    assert second.value("replace") == old.id
    assert "stops working after 1 day" in await response.text()
    before = datetime.now(UTC)
    response = await client.post("/api-keys/authorize", data=second.data(decision="replace"))
    fields = dict(handoff_fields(await response.text()))
    new_text = fields["apiKey"]
    retired, new = await keys_of(client)
    assert (retired.id, new.id != old.id, retired.replaced_by) == (old.id, True, new.id)
    assert new_text.startswith(new.id)
    assert retired.expires_at is not None
    day = timedelta(hours=24)
    assert before + day - timedelta(seconds=1) <= retired.expires_at <= datetime.now(UTC) + day
    assert fields["previousKeyExpiresAt"] == retired.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    # A key in its grace period is not offered for replacement again: the new one is.
    _, third = await consent(client, *request)
    assert third.value("replace") == new.id


async def test_reauthorizing_with_no_grace_stops_the_old_key_at_once(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """`reauthorize_grace: 0`: the replaced key is refused from the moment of consent."""
    client = await aiohttp_client(create_app(make_settings(sqlite_url, reauthorize_grace=0.0)))
    services = client.app[SERVICES]
    await make_user(services, "alice@example.com", grants=["demo.reports.read"])
    await login(client)
    request = (
        ("redirect", CALLBACK),
        ("applicationIdentifier", "gozo"),
        ("permissions", "demo.reports.read"),
    )
    _, first = await consent(client, *request)
    old_text = dict(
        handoff_fields(
            await (
                await client.post("/api-keys/authorize", data=first.data(decision="authorize"))
            ).text()
        )
    )["apiKey"]
    response, second = await consent(client, *request)
    assert "stops working at once" in await response.text()
    await client.post("/api-keys/authorize", data=second.data(decision="replace"))
    with pytest.raises(Unauthenticated) as refused:
        await services.verifier.verify(old_text)
    assert refused.value.code == "key-expired"


async def test_a_different_origin_never_matches(client: Any) -> None:
    """The same identifier at another origin is a new key, not a replacement."""
    base = (("applicationIdentifier", "gozo"), ("permissions", "demo.reports.read"))
    _, first = await consent(client, ("redirect", CALLBACK), *base)
    await client.post("/api-keys/authorize", data=first.data(decision="authorize"))
    response, second = await consent(client, ("redirect", "https://other.example/cb"), *base)
    assert "already has a key" not in await response.text()
    with pytest.raises(StopIteration):
        second.value("replace")

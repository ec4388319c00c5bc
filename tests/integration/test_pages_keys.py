"""Account → API keys pages: list, create (shown once), disable/enable, delete."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.app import create_app
from gateway.keys.format import mask
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.e2e.support import add_store, form, login, make_user

KEY_RE = r"apk_[0-9A-Za-z]{54}"


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str) -> Any:
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    services = client.app[SERVICES]
    await make_user(
        services,
        "alice@example.com",
        grants=["demo.reports.read", "demo.store.canmodifystoresettings"],
    )
    await add_store(services, "S1", "Main shop")
    await add_store(services, "S2", "Outlet")
    await login(client)
    return client


async def _create(client: Any, **fields: Any) -> Any:
    page = await client.get("/account/api-keys/new")
    assert page.status == 200
    data = form(await page.text(), "/account/api-keys").data(**fields)
    return await client.post("/account/api-keys", data=data, allow_redirects=False)


async def _only_key(client: Any) -> Any:
    alice = await client.app[SERVICES].users.find("alice@example.com")
    keys = await client.app[SERVICES].keys.list_for(alice.id)
    assert len(keys) == 1
    return keys[0]


async def test_key_pages_need_a_login(aiohttp_client: Any, sqlite_url: str) -> None:
    """Logged out, the key list sends you to the login page and back."""
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    response = await client.get("/account/api-keys", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login?next=%2Faccount%2Fapi-keys"


async def test_new_key_is_shown_once_and_works(client: Any) -> None:
    """The key appears once, uncached, and verifies; the list then shows it masked only."""
    response = await _create(client, label="Nightly", permission=["demo.reports.read"])
    assert response.status == 201
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.text()
    text = re.search(KEY_RE, body)
    assert text is not None
    assert 'data-copy="new-key"' in body
    verified = await client.app[SERVICES].verifier.verify(text.group(0))
    assert verified.email == "alice@example.com"
    listing = await (await client.get("/account/api-keys")).text()
    record = await _only_key(client)
    assert mask(record.id) in listing
    assert text.group(0) not in listing
    assert "Nightly" in listing


async def test_cannot_create_beyond_own_grants(client: Any) -> None:
    """A permission the user does not hold is refused with a readable message; no key."""
    response = await _create(client, label="Too much", permission=["demo.legacy.access"])
    assert response.status == 403
    assert "demo.legacy.access" in await response.text()
    alice = await client.app[SERVICES].users.find("alice@example.com")
    assert await client.app[SERVICES].keys.list_for(alice.id) == []


async def test_store_scoping_path_and_expiry_are_applied(client: Any) -> None:
    """ "Only these stores", a path restriction and an expiry reach the key."""
    response = await _create(
        client,
        label="Shop",
        permission=["demo.store.canviewinvoices"],
        **{"scope-store": "selected", "resource": ["store:S1"]},
        path="/api/v1/stores",
        expires="2099-12-31",
    )
    assert response.status == 201, await response.text()
    key = await _only_key(client)
    assert key.permissions == ("demo.store.canviewinvoices:S1",)
    assert key.path_rule == "/api/v1/stores"
    assert key.expires_at is not None
    assert key.expires_at.year == 2100


async def test_bad_input_re_renders_the_form_with_the_reason(client: Any) -> None:
    """A malformed path rule or date is a 422 form with the reason, never a 500."""
    response = await _create(client, label="x", path="api/../x", expires="tomorrow")
    assert response.status == 422
    body = await response.text()
    assert "expected a date" in body or "path rule" in body
    response = await _create(
        client,
        label="x",
        permission=["demo.store.canviewinvoices"],
        **{"scope-store": "selected"},
    )
    assert response.status == 422
    assert "choose at least one store" in await response.text()


async def test_create_without_csrf_is_refused(client: Any) -> None:
    """A create POST without the CSRF token creates nothing."""
    response = await client.post(
        "/account/api-keys", data={"label": "x", "permission": "demo.reports.read"}
    )
    assert response.status == 403
    alice = await client.app[SERVICES].users.find("alice@example.com")
    assert await client.app[SERVICES].keys.list_for(alice.id) == []


async def test_disable_enable_and_delete(client: Any) -> None:
    """Disable and enable change the status; delete asks first, then removes the key."""
    await _create(client, label="Temp", permission=["demo.reports.read"])
    key = await _only_key(client)
    listing = await (await client.get("/account/api-keys")).text()
    status_form = form(listing, f"/account/api-keys/{key.id}/status")
    response = await client.post(status_form.action, data=status_form.data(), allow_redirects=False)
    assert response.status == 303
    assert (await _only_key(client)).status == "disabled"
    listing = await (await client.get(response.headers["Location"])).text()
    assert "Key disabled." in listing
    status_form = form(listing, f"/account/api-keys/{key.id}/status")
    await client.post(status_form.action, data=status_form.data())
    assert (await _only_key(client)).status == "active"

    confirm = await client.get(f"/account/api-keys/{key.id}/delete")
    assert "cannot be undone" in await confirm.text()
    delete_form = form(await confirm.text(), f"/account/api-keys/{key.id}/delete")
    response = await client.post(delete_form.action, data=delete_form.data(), allow_redirects=False)
    assert response.headers["Location"] == "/account/api-keys?done=deleted"
    alice = await client.app[SERVICES].users.find("alice@example.com")
    assert await client.app[SERVICES].keys.list_for(alice.id) == []


async def test_another_users_key_is_not_found(client: Any) -> None:
    """Pages never reveal or change someone else's key."""
    services = client.app[SERVICES]
    bob = await make_user(services, "bob@example.com", grants=["demo.reports.read"])
    new = await services.keys.create(
        owner=bob, creator=None, label="bob", permissions=["demo.reports.read"]
    )
    response = await client.get(f"/account/api-keys/{new.record.id}/delete")
    assert response.status == 404
    listing = await (await client.get("/account/api-keys")).text()
    csrf = form(listing, "/logout").value("csrf")
    response = await client.post(f"/account/api-keys/{new.record.id}/delete", data={"csrf": csrf})
    assert response.status == 404
    assert await services.store.get_key(new.record.id) is not None

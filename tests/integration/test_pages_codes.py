"""The code variant of the authorize flow and its exchange at POST /api-keys/token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from gateway.app import create_app
from gateway.pages.pkce import s256
from gateway.state import SERVICES
from gateway.store import open_store
from gateway.store.base import Audit, AuthorizationCode, User
from tests.conftest import make_settings
from tests.e2e.support import form, login, make_user

CALLBACK = "https://app.example/callback"
VERIFIER = "v" * 20 + "-._~" + "0123456789abcdefghijklmnopq"


async def _client(aiohttp_client: Any, database_url: str, **settings: Any) -> Any:
    client = await aiohttp_client(create_app(make_settings(database_url, **settings)))
    await make_user(client.app[SERVICES], "alice@example.com", grants=["demo.reports.read"])
    await login(client)
    return client


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str) -> Any:
    return await _client(aiohttp_client, sqlite_url)


async def get_code(client: Any, *extra: tuple[str, str]) -> dict[str, str]:
    pairs = [
        ("applicationName", "Gozo"),
        ("redirect", CALLBACK),
        ("applicationIdentifier", "gozo"),
        ("permissions", "demo.reports.read"),
        ("response_type", "code"),
        ("state", "st-123"),
        *extra,
    ]
    page = await client.get("/api-keys/authorize?" + urlencode(pairs))
    assert page.status == 200, await page.text()
    consent = form(await page.text(), "/api-keys/authorize")
    response = await client.post("/api-keys/authorize", data=consent.data(decision="authorize"))
    assert response.status == 200
    assert "form-action https://app.example;" in response.headers["Content-Security-Policy"]
    return dict(form(await response.text(), CALLBACK).fields)


async def test_code_is_posted_and_exchanged_for_a_working_key(client: Any) -> None:
    """The redirect gets code+state (no key); the exchange returns apiKey/userId/permissions."""
    fields = await get_code(client)
    assert set(fields) == {"code", "state"}
    assert fields["state"] == "st-123"
    services = client.app[SERVICES]
    alice = await services.users.find("alice@example.com")
    assert await services.keys.list_for(alice.id) == []  # minted at exchange, not before
    response = await client.post("/api-keys/token", data={"code": fields["code"]})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["userId"] == alice.id
    assert body["permissions"] == ["demo.reports.read"]
    verified = await services.verifier.verify(body["apiKey"])
    assert verified.user_id == alice.id
    [key] = await services.keys.list_for(alice.id)
    assert key.redirect_origin == "https://app.example"
    assert key.application_identifier == "gozo"


async def test_a_used_code_cannot_be_replayed(client: Any) -> None:
    """A code works once; the second exchange is invalid_grant."""
    code = (await get_code(client))["code"]
    assert (await client.post("/api-keys/token", json={"code": code})).status == 200
    replay = await client.post("/api-keys/token", json={"code": code})
    assert replay.status == 400
    assert (await replay.json())["error"] == "invalid_grant"


async def test_an_expired_code_is_refused(aiohttp_client: Any, sqlite_url: str) -> None:
    """With a zero TTL the code is already expired at exchange: invalid_grant, no key."""
    client = await _client(aiohttp_client, sqlite_url, authorization_code_ttl=0.0)
    code = (await get_code(client))["code"]
    response = await client.post("/api-keys/token", data={"code": code})
    assert response.status == 400
    assert await response.json() == {
        "error": "invalid_grant",
        "error_description": "the code has expired",
    }
    alice = await client.app[SERVICES].users.find("alice@example.com")
    assert await client.app[SERVICES].keys.list_for(alice.id) == []


async def test_pkce_verifier_is_required_and_checked(client: Any) -> None:
    """With a code_challenge, only the matching code_verifier redeems the code."""
    challenge = ("code_challenge", s256(VERIFIER))
    code = (await get_code(client, challenge, ("code_challenge_method", "S256")))["code"]
    wrong = await client.post("/api-keys/token", data={"code": code, "code_verifier": "x" * 43})
    assert (await wrong.json())["error"] == "invalid_grant"
    # A failed attempt uses the code up: an intercepted code is worth one guess, not many.
    right = await client.post("/api-keys/token", data={"code": code, "code_verifier": VERIFIER})
    assert right.status == 400
    code = (await get_code(client, challenge))["code"]
    missing = await client.post("/api-keys/token", data={"code": code})
    assert (await missing.json())["error"] == "invalid_grant"
    code = (await get_code(client, challenge))["code"]
    right = await client.post("/api-keys/token", data={"code": code, "code_verifier": VERIFIER})
    assert right.status == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"grant_type": "password", "code": "x"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"code": "not-a-code"}, "invalid_grant"),
    ],
)
async def test_token_errors_are_oauth_json(client: Any, body: dict[str, str], error: str) -> None:
    """Bad exchanges answer {error, error_description} with status 400."""
    response = await client.post("/api-keys/token", data=body)
    assert response.status == 400
    payload = await response.json()
    assert payload["error"] == error
    assert payload["error_description"]


async def test_non_json_or_form_bodies_are_refused(client: Any) -> None:
    """A body that is neither a form nor JSON is invalid_request, never a 500."""
    response = await client.post(
        "/api-keys/token", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (await response.json())["error"] == "invalid_request"
    response = await client.post(
        "/api-keys/token", data=b"code=x", headers={"Content-Type": "text/plain"}
    )
    assert (await response.json())["error"] == "invalid_request"


async def test_code_flow_replacement_rotates_the_old_key_at_exchange(client: Any) -> None:
    """Re-authorizing with the code flow replaces the app's key when the code is redeemed: the
    old key is rotated with the re-authorization grace, and the exchange says until when."""
    first = (await get_code(client))["code"]
    old = (await (await client.post("/api-keys/token", data={"code": first})).json())["apiKey"]
    pairs = [
        ("redirect", CALLBACK),
        ("applicationIdentifier", "gozo"),
        ("permissions", "demo.reports.read"),
        ("response_type", "code"),
    ]
    page = await client.get("/api-keys/authorize?" + urlencode(pairs))
    consent = form(await page.text(), "/api-keys/authorize")
    response = await client.post("/api-keys/authorize", data=consent.data(decision="replace"))
    code = dict(form(await response.text(), CALLBACK).fields)["code"]
    exchanged = await (await client.post("/api-keys/token", data={"code": code})).json()
    services = client.app[SERVICES]
    alice = await services.users.find("alice@example.com")
    retired, key = await services.keys.list_for(alice.id)
    assert exchanged["apiKey"].startswith(key.id)
    assert old.startswith(retired.id)
    assert retired.replaced_by == key.id
    assert retired.expires_at is not None
    assert exchanged["previousKeyExpiresAt"] == retired.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_concurrent_redemptions_yield_one_key(store_url: str) -> None:
    """Two redeemers racing for one code (on PostgreSQL and SQLite): exactly one wins."""
    store = await open_store(store_url)
    try:
        await store.migrate()
        now = datetime.now(UTC)
        user = User("u1", "u@example.com", None, False, False, False, (), now)
        await store.create_user(user, Audit("test", "user.create", "user:u1"))
        code = AuthorizationCode(
            code_hash=b"h" * 32,
            user_id="u1",
            permissions=("demo.reports.read",),
            label="App",
            application_identifier=None,
            redirect_origin="https://app.example",
            code_challenge=None,
            replace_key_id=None,
            created_at=now,
            expires_at=now + timedelta(seconds=60),
        )
        await store.create_authorization_code(code, Audit("test", "code.issue", "user:u1"))
        results = await asyncio.gather(
            *(store.consume_authorization_code(b"h" * 32) for _ in range(8))
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert winners[0].permissions == ("demo.reports.read",)
    finally:
        await store.close()

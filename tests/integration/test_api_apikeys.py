"""Buckaroo-style /v1/apikeys: create, list, get, enable/disable, rename, delete, decrypt."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.keys import format as keyformat
from gateway.state import SETTINGS
from gateway.store.base import Audit, Session, User
from tests.conftest import make_settings
from tests.openapi_check import Gateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
BUCKAROO = ROOT / "policies" / "buckaroo.yaml"
PASSWORD = "correct horse battery"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
async def gw(aiohttp_client: Any, sqlite_url: str) -> Gateway:
    return await start_gateway(aiohttp_client, make_settings(sqlite_url, policy=(BUCKAROO,)))


async def merchant(gw: Gateway, *grants: str, password: str | None = None) -> User:
    return await gw.user(
        "shop@example.com",
        password=password,
        grants=grants or ("sale:write", "transaction:read", "apikey:manage"),
    )


async def test_create_answers_201_with_the_buckaroo_shape(gw: Gateway) -> None:
    """POST /v1/apikeys answers 201 with id, key, name, maskedApiKey, status, scopes,
    createdAt (ISO 8601 Z) and _links.self; the key works."""
    owner = await merchant(gw)
    manager = await gw.key(owner, ["apikey:manage", "sale:write", "transaction:read"])
    reply = await gw.api.post(
        "/v1/apikeys",
        key=manager.text,
        scheme="Bearer",
        json_body={
            "name": "my-integration-key",
            "scopes": "sale:read  sale:write transaction:read",
        },
    )
    assert reply.status == 201
    body = reply.json()
    parsed = keyformat.parse(body["key"])
    assert body["id"] == parsed.key_id
    assert body["name"] == "my-integration-key"
    assert body["maskedApiKey"] == keyformat.mask(parsed.key_id)
    assert body["status"] == "Active"
    assert body["scopes"] == "sale:read sale:write transaction:read"
    assert ISO_Z.match(body["createdAt"])
    assert body["_links"] == {"self": {"href": f"/v1/apikeys/{body['id']}", "method": "GET"}}
    assert reply.headers["Location"] == f"/v1/apikeys/{body['id']}"
    assert reply.headers["Cache-Control"] == "no-store"
    me = await gw.api.get("/api/v1/api-keys/current", key=body["key"], scheme="x-api-key")
    assert me.status == 200


async def test_management_scopes_are_enforced_for_keys(gw: Gateway) -> None:
    """apikey:read may list but not create; a key without either may do neither."""
    owner = await merchant(gw, "sale:write", "apikey:manage")
    reader = await gw.key(owner, ["apikey:read"])
    plain = await gw.key(owner, ["sale:read"])
    assert (await gw.api.get("/v1/apikeys", key=reader.text)).status == 200
    denied = await gw.api.post(
        "/v1/apikeys", key=reader.text, json_body={"name": "x", "scopes": ""}
    )
    assert denied.status == 403
    assert denied.json()["missingPermission"] == "apikey:manage"
    listing = await gw.api.get("/v1/apikeys", key=plain.text)
    assert listing.status == 403
    assert listing.json()["missingPermission"] == "apikey:read"


async def test_a_key_cannot_mint_a_stronger_key(gw: Gateway) -> None:
    """A managing key holding sale:read cannot create a key with sale:write, though the owner
    holds it; nor one whose scopes the owner lacks."""
    owner = await merchant(gw, "sale:write", "apikey:manage")
    manager = await gw.key(owner, ["apikey:manage", "sale:read"])
    stronger = await gw.api.post(
        "/v1/apikeys", key=manager.text, json_body={"name": "x", "scopes": "sale:write"}
    )
    assert stronger.status == 403
    assert stronger.json()["code"] == "missing-permission"
    assert stronger.json()["missingPermission"] == "sale:write"
    beyond_owner = await gw.api.post(
        "/v1/apikeys", key=manager.text, json_body={"name": "x", "scopes": "refund:write"}
    )
    assert beyond_owner.status == 403
    assert beyond_owner.json()["missingPermission"] == "refund:write"
    implied = await gw.api.post(
        "/v1/apikeys", key=manager.text, json_body={"name": "x", "scopes": "sale:read apikey:read"}
    )
    assert implied.status == 201  # apikey:manage implies apikey:read


async def test_list_is_paginated_and_masked(gw: Gateway) -> None:
    """GET /v1/apikeys pages with page/pageSize, links next/prev, and never shows a key."""
    owner = await merchant(gw)
    manager = await gw.key(owner, ["apikey:manage"])
    for n in range(4):
        created = await gw.api.post(
            "/v1/apikeys", key=manager.text, json_body={"name": f"k{n}", "scopes": ""}
        )
        assert created.status == 201
    first = (await gw.api.get("/v1/apikeys?pageSize=2", key=manager.text)).json()
    assert first["total"] == 5
    assert [k["name"] for k in first["items"]] == ["test", "k0"]
    assert first["_links"]["next"]["href"] == "/v1/apikeys?page=2&pageSize=2"
    assert "prev" not in first["_links"]
    last = (await gw.api.get("/v1/apikeys?page=3&pageSize=2", key=manager.text)).json()
    assert [k["name"] for k in last["items"]] == ["k3"]
    assert "next" not in last["_links"]
    assert last["_links"]["prev"]["href"] == "/v1/apikeys?page=2&pageSize=2"
    assert all("key" not in k for k in first["items"] + last["items"])


async def test_get_patch_and_delete_one_key(gw: Gateway) -> None:
    """GET shows it masked; PATCH disables (the key stops), enables and renames; DELETE is 204
    and the key is gone."""
    owner = await merchant(gw)
    manager = await gw.key(owner, ["apikey:manage"])
    target = await gw.key(owner, ["sale:read"])
    url = f"/v1/apikeys/{target.record.id}"
    shown = await gw.api.get(url, key=manager.text)
    assert shown.status == 200
    assert shown.json()["maskedApiKey"] == keyformat.mask(target.record.id)
    assert "key" not in shown.json()

    disabled = await gw.api.patch(url, key=manager.text, json_body={"status": "Disabled"})
    assert disabled.json()["status"] == "Disabled"
    assert (await gw.api.get("/api/v1/api-keys/current", key=target.text)).status == 401
    enabled = await gw.api.patch(
        url, key=manager.text, json_body={"status": "Active", "name": "renamed"}
    )
    assert enabled.json()["status"] == "Active"
    assert enabled.json()["name"] == "renamed"
    assert (await gw.api.get("/api/v1/api-keys/current", key=target.text)).status == 200

    deleted = await gw.api.delete(url, key=manager.text)
    assert deleted.status == 204
    assert (await gw.api.get(url, key=manager.text)).status == 404
    assert (await gw.api.get("/api/v1/api-keys/current", key=target.text)).status == 401
    actions = [
        a.action for a in await gw.services.store.list_audit(target=f"key:{target.record.id}")
    ]
    assert actions[:4] == ["key.revoke", "key.enable", "key.rename", "key.disable"]


async def test_other_users_keys_and_whole_keys_are_not_found(gw: Gateway) -> None:
    """Another user's key id, and a whole key in the URL, are 404 (nothing revealed)."""
    owner = await merchant(gw)
    manager = await gw.key(owner, ["apikey:manage"])
    other = await gw.user("other@example.com", grants=["sale:read"])
    theirs = await gw.key(other, ["sale:read"])
    for segment in (theirs.record.id, theirs.text, manager.text, "nonsense"):
        for method in ("GET", "PATCH", "DELETE"):
            reply = await gw.api.request(
                method, f"/v1/apikeys/{segment}", key=manager.text, json_body={"name": "x"}
            )
            assert reply.status == 404, (segment, method)
            assert reply.json()["code"] == "apikey-not-found"
    assert (await gw.api.get("/api/v1/api-keys/current", key=theirs.text)).json()["label"] == "test"


async def test_decrypt_is_refused_when_keys_are_not_retrievable(gw: Gateway) -> None:
    """With retrievable keys off (the default), decrypt is a 403 that says so."""
    owner = await merchant(gw)
    manager = await gw.key(owner, ["apikey:manage"])
    reply = await gw.api.patch(
        f"/v1/apikeys/{manager.record.id}/decrypt",
        key=manager.text,
        json_body={"password": PASSWORD},
    )
    assert reply.status == 403
    decrypt_scope = reply.json()
    assert decrypt_scope["missingPermission"] == "apikey:decrypt"
    owner2 = await gw.user("dec@example.com", grants=["apikey:decrypt"])
    decrypter = await gw.key(owner2, ["apikey:decrypt"])
    reply = await gw.api.patch(
        f"/v1/apikeys/{decrypter.record.id}/decrypt",
        key=decrypter.text,
        json_body={"password": PASSWORD},
    )
    assert reply.status == 403
    assert reply.json()["code"] == "keys-not-retrievable"
    assert "GATEWAY_RETRIEVABLE_KEYS" in reply.json()["detail"]


async def test_decrypt_needs_the_fresh_password_and_is_audited(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """With retrievable keys on, decrypt returns the key only with the owner's password in the
    body (wrong: 403, missing: 422), writes a key.decrypt audit record, and a key made before
    retrievable keys were on has no copy (409)."""
    base = make_settings(sqlite_url, policy=(BUCKAROO,))
    plain = await start_gateway(aiohttp_client, base)
    owner = await merchant(plain, "sale:read", "apikey:manage", "apikey:decrypt", password=PASSWORD)
    older = await plain.key(owner, ["sale:read"])
    await plain.raw.close()

    gw = await start_gateway(
        aiohttp_client,
        make_settings(
            sqlite_url,
            policy=(BUCKAROO,),
            secret=base.secret,
            retrievable_keys=True,
            key_encryption_key=secrets.token_bytes(32),
        ),
    )
    decrypter = await gw.key(owner, ["apikey:decrypt", "sale:read"])
    url = f"/v1/apikeys/{decrypter.record.id}/decrypt"
    missing = await gw.api.patch(url, key=decrypter.text, json_body={})
    assert missing.status == 422
    wrong = await gw.api.patch(url, key=decrypter.text, json_body={"password": "not it at all"})
    assert wrong.status == 403
    assert wrong.json()["code"] == "reauthentication-failed"
    right = await gw.api.patch(url, key=decrypter.text, json_body={"password": PASSWORD})
    assert right.status == 200
    assert right.json()["key"] == decrypter.text
    assert right.json()["id"] == decrypter.record.id
    audit = await gw.services.store.list_audit(target=f"key:{decrypter.record.id}")
    assert audit[0].action == "key.decrypt"
    assert audit[0].actor == f"key:{decrypter.record.id}"
    assert decrypter.text not in str(audit[0].detail)

    no_copy = await gw.api.patch(
        f"/v1/apikeys/{older.record.id}/decrypt",
        key=decrypter.text,
        json_body={"password": PASSWORD},
    )
    assert no_copy.status == 409
    assert no_copy.json()["code"] == "key-not-retrievable"


async def test_browser_session_manages_own_keys_with_csrf(gw: Gateway) -> None:
    """A logged-in session may list keys without a scope; changes need the CSRF token."""
    from gateway import sessions

    owner = await merchant(gw, "sale:read")
    token = secrets.token_urlsafe(32)
    settings = gw.raw.app[SETTINGS]
    now = datetime.now(UTC)
    await gw.services.store.create_session(
        Session(sessions.token_hash(settings, token), owner.id, now, now + timedelta(hours=1)),
        Audit("test", "user.login", f"user:{owner.id}"),
    )
    cookie = {"Cookie": f"{sessions.COOKIE}={token}"}
    listing = await gw.api.get("/v1/apikeys", headers=cookie)
    assert listing.status == 200
    body = {"name": "from the browser", "scopes": "sale:read"}
    no_csrf = await gw.api.post("/v1/apikeys", headers=cookie, json_body=body)
    assert no_csrf.status == 403
    assert no_csrf.json()["code"] == "csrf-token-invalid"
    probe = make_mocked_request("GET", "/", headers=cookie, app=gw.raw.app)
    csrf = await sessions.csrf_token(probe)
    made = await gw.api.post(
        "/v1/apikeys", headers={**cookie, "X-CSRF-Token": csrf}, json_body=body
    )
    assert made.status == 201
    audit = await gw.services.store.list_audit(target=f"key:{made.json()['id']}")
    assert audit[0].actor == f"user:{owner.id}"


async def test_create_with_expires_at_sets_the_expiry(gw: Gateway) -> None:
    """`expiresAt` (RFC 3339 with an offset) is stored and answered in UTC; null means none."""
    owner = await merchant(gw)
    manager = await gw.key(owner, ["apikey:manage", "sale:write"])
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    offset = later.astimezone(timezone(timedelta(hours=2))).isoformat()
    reply = await gw.api.post(
        "/v1/apikeys",
        key=manager.text,
        json_body={"name": "expiring", "scopes": "sale:read", "expiresAt": offset},
    )
    assert reply.status == 201
    assert reply.json()["expiresAt"] == later.strftime("%Y-%m-%dT%H:%M:%SZ")
    stored = await gw.services.store.get_key(reply.json()["id"])
    assert stored is not None
    assert stored.expires_at == later
    none = await gw.api.post(
        "/v1/apikeys",
        key=manager.text,
        json_body={"name": "forever", "scopes": "", "expiresAt": None},
    )
    assert none.json()["expiresAt"] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2001-01-01T00:00:00Z", "in the future"),
        ("2099-01-01T00:00:00", "offset"),
        ("2099-01-01", "offset"),
        ("tomorrow", "offset"),
        (1893456000, "date-time string"),
    ],
)
async def test_bad_or_past_expires_at_is_422(gw: Gateway, value: object, message: str) -> None:
    """A past, offset-less, date-only or non-string `expiresAt` is a 422 naming the field."""
    owner = await merchant(gw)
    manager = await gw.key(owner, ["apikey:manage", "sale:write"])
    reply = await gw.api.post(
        "/v1/apikeys",
        key=manager.text,
        json_body={"name": "bad", "scopes": "sale:read", "expiresAt": value},
    )
    assert reply.status == 422
    problem = reply.json()
    assert [e["path"] for e in problem["errors"]] == ["expiresAt"], problem
    assert message in problem["errors"][0]["message"]
    assert await gw.services.keys.list_for(owner.id) == [manager.record]

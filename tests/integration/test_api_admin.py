"""Admin API (/v1/admin): users, resources and any user's keys; every change audited."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.keys.manage import NewKey
from tests.conftest import make_settings
from tests.openapi_check import Gateway, start_gateway

PASSWORD = "correct horse battery"


@pytest.fixture
async def gw(aiohttp_client: Any, sqlite_url: str) -> Gateway:
    return await start_gateway(aiohttp_client, make_settings(sqlite_url))


@pytest.fixture
async def admin_key(gw: Gateway) -> NewKey:
    admin = await gw.user("root@example.com", admin=True)
    return await gw.key(admin, ["unrestricted"])


async def test_admin_endpoints_need_unrestricted(gw: Gateway) -> None:
    """A non-admin's key, and an admin's limited key, are 403 on every admin endpoint."""
    admin = await gw.user("root@example.com", admin=True)
    limited = await gw.key(admin, ["demo.reports.read"])
    person = await gw.user("ann@example.com", grants=["demo.reports.read"])
    plain = await gw.key(person, ["demo.reports.read"])
    for key in (limited, plain):
        for method, path in [
            ("GET", "/v1/admin/users"),
            ("POST", "/v1/admin/users"),
            ("GET", f"/v1/admin/users/{person.id}"),
            ("PATCH", f"/v1/admin/users/{person.id}"),
            ("PUT", f"/v1/admin/users/{person.id}/password"),
            ("GET", f"/v1/admin/users/{person.id}/keys"),
            ("DELETE", f"/v1/admin/users/{person.id}/keys/{plain.record.id}"),
            ("GET", "/v1/admin/resources"),
            ("PUT", "/v1/admin/resources/store/S1"),
            ("DELETE", "/v1/admin/resources/store/S1"),
        ]:
            reply = await gw.api.request(method, path, key=key.text, json_body={})
            assert reply.status == 403, (method, path)
            assert reply.json()["missingPermission"] == "unrestricted"
    assert (await gw.api.get("/v1/admin/users")).status == 401


async def test_create_people_and_service_users(gw: Gateway, admin_key: NewKey) -> None:
    """POST creates a person (with password) or a service user (without); duplicates are 409;
    GET finds them by id or email; the list is paginated."""
    person = await gw.api.post(
        "/v1/admin/users",
        key=admin_key.text,
        json_body={
            "email": "ann@example.com",
            "password": PASSWORD,
            "grants": ["demo.reports.read"],
        },
    )
    assert person.status == 201
    ann = person.json()
    assert ann["email"] == "ann@example.com"
    assert (ann["admin"], ann["service"], ann["disabled"]) == (False, False, False)
    assert ann["grants"] == ["demo.reports.read"]
    assert "password" not in str(ann).lower()
    assert person.headers["Location"] == f"/v1/admin/users/{ann['id']}"
    service = await gw.api.post(
        "/v1/admin/users",
        key=admin_key.text,
        json_body={"email": "ci@example.com", "service": True, "grants": ["demo.reports.read"]},
    )
    assert service.status == 201
    assert service.json()["service"] is True
    duplicate = await gw.api.post(
        "/v1/admin/users",
        key=admin_key.text,
        json_body={"email": "ANN@example.com", "password": PASSWORD},
    )
    assert duplicate.status == 409
    assert duplicate.json()["code"] == "user-exists"
    by_email = await gw.api.get("/v1/admin/users/ann@example.com", key=admin_key.text)
    assert by_email.json() == ann
    assert (await gw.api.get("/v1/admin/users/nobody", key=admin_key.text)).status == 404
    page = (await gw.api.get("/v1/admin/users?pageSize=2", key=admin_key.text)).json()
    assert page["total"] == 3
    assert [u["email"] for u in page["items"]] == ["ann@example.com", "ci@example.com"]
    actions = {a.action for a in await gw.services.store.list_audit()}
    assert "user.create" in actions


async def test_disable_and_enable_user_stops_and_restores_all_his_keys(
    pg_url: str, redis_url: str, aiohttp_client: Any
) -> None:
    """Disabling a user refuses every one of his keys at once (cached ones too, on PostgreSQL
    with Redis); enabling him restores them. Nobody can disable himself."""
    gw = await start_gateway(aiohttp_client, make_settings(pg_url, redis_url=redis_url))
    admin = await gw.user("root@example.com", admin=True)
    admin_key = await gw.key(admin, ["unrestricted"])
    ann = await gw.user("ann@example.com", grants=["demo.reports.read"])
    keys = [await gw.key(ann, ["demo.reports.read"]) for _ in range(3)]
    for key in keys:  # warm every cache
        assert (await gw.api.get("/api/v1/api-keys/current", key=key.text)).status == 200
    off = await gw.api.patch(
        f"/v1/admin/users/{ann.id}", key=admin_key.text, json_body={"disabled": True}
    )
    assert off.json()["disabled"] is True
    for key in keys:
        refused = await gw.api.get("/api/v1/api-keys/current", key=key.text)
        assert refused.status == 401
        assert refused.json()["message"] == "the API key's owner is disabled"
    on = await gw.api.patch(
        f"/v1/admin/users/{ann.email}", key=admin_key.text, json_body={"disabled": False}
    )
    assert on.json()["disabled"] is False
    assert (await gw.api.get("/api/v1/api-keys/current", key=keys[0].text)).status == 200
    myself = await gw.api.patch(
        f"/v1/admin/users/{admin.id}", key=admin_key.text, json_body={"disabled": True}
    )
    assert myself.status == 409
    actions = [a.action for a in await gw.services.store.list_audit(target=f"user:{ann.id}")]
    assert actions[:2] == ["user.enable", "user.disable"]


async def test_set_grants_replaces_them_and_narrows_keys(gw: Gateway, admin_key: NewKey) -> None:
    """PATCH grants replaces the user's grants (normalised, audited); a bad grant is a 422."""
    ann = await gw.user("ann@example.com", grants=["demo.reports.read", "demo.legacy.access"])
    key = await gw.key(ann, ["demo.reports.read"])
    reply = await gw.api.patch(
        f"/v1/admin/users/{ann.id}",
        key=admin_key.text,
        json_body={"grants": [" DEMO.legacy.access ", "demo.store.canviewinvoices:S1"]},
    )
    assert reply.status == 200
    assert reply.json()["grants"] == ["demo.legacy.access", "demo.store.canviewinvoices:S1"]
    bad = await gw.api.patch(
        f"/v1/admin/users/{ann.id}", key=admin_key.text, json_body={"grants": ["nope"]}
    )
    assert bad.status == 422
    assert bad.json()["errors"][0]["path"] == "grants[0]"
    # The key itself is kept; what it may do is re-checked against the new grants per request
    # (test_api_haplo.py proves that on a proxied route).
    assert [k.id for k in await gw.services.keys.list_for(ann.id)] == [key.record.id]
    audit = await gw.services.store.list_audit(target=f"user:{ann.id}")
    assert audit[0].action == "user.set-grants"


async def test_set_password_keeps_keys_valid(gw: Gateway, admin_key: NewKey) -> None:
    """PUT password lets the user sign in with the new one, and his keys keep working (Haplo)."""
    ann = await gw.user("ann@example.com", password=PASSWORD, grants=["demo.reports.read"])
    key = await gw.key(ann, ["demo.reports.read"])
    new_password = "a brand new passphrase"
    reply = await gw.api.put(
        f"/v1/admin/users/{ann.id}/password",
        key=admin_key.text,
        json_body={"password": new_password},
    )
    assert reply.status == 200
    short = await gw.api.put(
        f"/v1/admin/users/{ann.id}/password", key=admin_key.text, json_body={"password": "short"}
    )
    assert short.status == 422
    assert (await gw.api.get("/api/v1/api-keys/current", key=key.text)).status == 200
    old = await gw.api.post("/api/v1/api-keys", basic=("ann@example.com", PASSWORD))
    assert old.status == 401
    new = await gw.api.post("/api/v1/api-keys", basic=("ann@example.com", new_password))
    assert new.status == 200
    audit = await gw.services.store.list_audit(target=f"user:{ann.id}")
    assert audit[0].action == "user.password"
    assert new_password not in str(audit[0].detail)


async def test_list_and_revoke_a_users_keys(gw: Gateway, admin_key: NewKey) -> None:
    """An admin lists a user's keys (masked) and revokes one (204); the key stops working."""
    ann = await gw.user("ann@example.com", grants=["demo.reports.read"])
    keys = [await gw.key(ann, ["demo.reports.read"]) for _ in range(2)]
    listing = await gw.api.get(f"/v1/admin/users/{ann.email}/keys", key=admin_key.text)
    assert [k["id"] for k in listing.json()["items"]] == [k.record.id for k in keys]
    assert all("key" not in k for k in listing.json()["items"])
    other = await gw.user("bob@example.com")
    wrong_owner = await gw.api.delete(
        f"/v1/admin/users/{other.id}/keys/{keys[0].record.id}", key=admin_key.text
    )
    assert wrong_owner.status == 404
    gone = await gw.api.delete(
        f"/v1/admin/users/{ann.id}/keys/{keys[0].record.id}", key=admin_key.text
    )
    assert gone.status == 204
    assert (await gw.api.get("/api/v1/api-keys/current", key=keys[0].text)).status == 401
    assert (await gw.api.get("/api/v1/api-keys/current", key=keys[1].text)).status == 200
    audit = await gw.services.store.list_audit(target=f"key:{keys[0].record.id}")
    assert audit[0].action == "key.revoke"
    assert audit[0].actor == f"key:{admin_key.record.id}"


async def test_resources_put_list_delete(gw: Gateway, admin_key: NewKey) -> None:
    """Resources are created or renamed with PUT, listed (by type), deleted (204, then 404);
    unknown types and malformed ids are 422; each change is audited."""
    put = await gw.api.put(
        "/v1/admin/resources/store/S1", key=admin_key.text, json_body={"name": "Main shop"}
    )
    assert put.json() == {"type": "store", "id": "S1", "name": "Main shop"}
    await gw.api.put(
        "/v1/admin/resources/store/S2", key=admin_key.text, json_body={"name": "Outlet"}
    )
    renamed = await gw.api.put(
        "/v1/admin/resources/store/S1", key=admin_key.text, json_body={"name": " Flagship "}
    )
    assert renamed.json()["name"] == "Flagship"
    listing = await gw.api.get("/v1/admin/resources?type=store", key=admin_key.text)
    assert [(r["id"], r["name"]) for r in listing.json()["items"]] == [
        ("S1", "Flagship"),
        ("S2", "Outlet"),
    ]
    unknown_type = await gw.api.put(
        "/v1/admin/resources/planet/P1", key=admin_key.text, json_body={"name": "Mars"}
    )
    assert unknown_type.status == 422
    assert unknown_type.json()["errors"][0]["path"] == "type"
    bad_name = await gw.api.put(
        "/v1/admin/resources/store/S3", key=admin_key.text, json_body={"name": "a\nb"}
    )
    assert bad_name.status == 422
    assert (await gw.api.delete("/v1/admin/resources/store/S2", key=admin_key.text)).status == 204
    assert (await gw.api.delete("/v1/admin/resources/store/S2", key=admin_key.text)).status == 404
    actions = [a.action for a in await gw.services.store.list_audit(target="resource:store/S2")]
    assert actions == ["resource.delete", "resource.put"]

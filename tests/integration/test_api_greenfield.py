"""Greenfield-compatible API-key endpoints: shapes, permission rules, errors (real stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.keys import format as keyformat
from tests.conftest import EXAMPLE_POLICY, make_settings
from tests.openapi_check import Gateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
BTCPAY_POLICY = ROOT / "policies" / "btcpay-greenfield.yaml"
PASSWORD = "correct horse battery"


@pytest.fixture
async def gw(aiohttp_client: Any, sqlite_url: str) -> Gateway:
    return await start_gateway(aiohttp_client, make_settings(sqlite_url))


@pytest.fixture
async def btcpay_gw(aiohttp_client: Any, sqlite_url: str) -> Gateway:
    settings = make_settings(sqlite_url, policy=(BTCPAY_POLICY, EXAMPLE_POLICY))
    return await start_gateway(aiohttp_client, settings)


async def test_create_with_basic_password_returns_api_key_data(
    store_url: str, aiohttp_client: Any
) -> None:
    """POST /api/v1/api-keys with Basic email:password answers 200 with exactly ApiKeyData."""
    gw = await start_gateway(aiohttp_client, make_settings(store_url))
    await gw.user("ann@example.com", password=PASSWORD, grants=["demo.reports.read"])
    reply = await gw.api.post(
        "/api/v1/api-keys",
        basic=("ann@example.com", PASSWORD),
        json_body={"label": "reports", "permissions": ["demo.reports.read"]},
    )
    assert reply.status == 200
    body = reply.json()
    assert set(body) == {"apiKey", "label", "permissions"}
    assert body["label"] == "reports"
    assert body["permissions"] == ["demo.reports.read"]
    keyformat.parse(body["apiKey"])  # the whole key, well-formed
    current = await gw.api.get("/api/v1/api-keys/current", key=body["apiKey"])
    assert current.status == 200
    assert current.json() == body


@pytest.mark.parametrize(
    "body", [None, {}, {"permissions": None}, {"label": None, "permissions": []}]
)
async def test_missing_or_null_permissions_give_a_key_without_permissions(
    gw: Gateway, body: Any
) -> None:
    """An empty body or null permissions mints a key with no permissions (proves the user)."""
    admin = await gw.user("root@example.com", admin=True)
    key = await gw.key(admin, ["unrestricted"])
    reply = await gw.api.post("/api/v1/api-keys", key=key.text, json_body=body)
    assert reply.status == 200
    assert reply.json()["permissions"] == []
    assert reply.json()["label"] == ""


async def test_permissions_are_normalised_deduplicated_in_order(gw: Gateway) -> None:
    """Names are trimmed and lower-cased, scopes keep case, duplicates drop (first wins)."""
    admin = await gw.user("root@example.com", admin=True)
    key = await gw.key(admin, ["unrestricted"])
    reply = await gw.api.post(
        "/api/v1/api-keys",
        key=key.text,
        json_body={
            "permissions": [
                " DEMO.Reports.Read ",
                "Demo.Store.CanViewInvoices:ShopA",
                "demo.reports.read",
                "demo.store.canviewinvoices:ShopA",
                "demo.store.canviewinvoices:shopa",
            ]
        },
    )
    assert reply.status == 200
    assert reply.json()["permissions"] == [
        "demo.reports.read",
        "demo.store.canviewinvoices:ShopA",
        "demo.store.canviewinvoices:shopa",
    ]


async def test_key_without_unrestricted_cannot_create_keys(gw: Gateway) -> None:
    """Creating a key with a key needs `unrestricted`: 403 missing-permission naming it."""
    admin = await gw.user("root@example.com", admin=True)
    key = await gw.key(admin, ["demo.reports.read"])
    reply = await gw.api.post("/api/v1/api-keys", key=key.text, json_body={})
    assert reply.status == 403
    assert reply.json() == {
        "code": "missing-permission",
        "message": "this needs the unrestricted permission",
        "missingPermission": "unrestricted",
    }


async def test_user_cannot_grant_what_he_lacks(gw: Gateway) -> None:
    """A user (Basic) cannot mint a key holding a permission he does not hold."""
    await gw.user("ann@example.com", password=PASSWORD, grants=["demo.reports.read"])
    reply = await gw.api.post(
        "/api/v1/api-keys",
        basic=("ann@example.com", PASSWORD),
        json_body={"permissions": ["demo.reports.read", "demo.legacy.access"]},
    )
    assert reply.status == 403
    assert reply.json()["code"] == "missing-permission"
    assert reply.json()["missingPermission"] == "demo.legacy.access"
    assert (
        await gw.services.keys.list_for((await gw.services.users.find("ann@example.com")).id) == []
    )


async def test_implication_and_scopes_bound_what_can_be_minted(gw: Gateway) -> None:
    """An implying grant covers the implied permission on any store; a store-scoped grant only
    covers that store."""
    await gw.user(
        "ann@example.com",
        password=PASSWORD,
        grants=["demo.store.canmodifystoresettings", "demo.reports.read"],
    )
    await gw.user("bob@example.com", password=PASSWORD, grants=["demo.store.canviewinvoices:S1"])
    ann = ("ann@example.com", PASSWORD)
    bob = ("bob@example.com", PASSWORD)
    implied = await gw.api.post(
        "/api/v1/api-keys", basic=ann, json_body={"permissions": ["demo.store.canviewinvoices:S9"]}
    )
    assert implied.status == 200
    scoped = await gw.api.post(
        "/api/v1/api-keys", basic=bob, json_body={"permissions": ["demo.store.canviewinvoices:S1"]}
    )
    assert scoped.status == 200
    wider = await gw.api.post(
        "/api/v1/api-keys", basic=bob, json_body={"permissions": ["demo.store.canviewinvoices"]}
    )
    assert wider.status == 403
    other_store = await gw.api.post(
        "/api/v1/api-keys", basic=bob, json_body={"permissions": ["demo.store.canviewinvoices:S2"]}
    )
    assert other_store.status == 403
    assert other_store.json()["missingPermission"] == "demo.store.canviewinvoices:S2"


async def test_unrestricted_key_of_a_demoted_admin_cannot_create_keys(gw: Gateway) -> None:
    """A key never widens its owner: once the owner is no longer admin, `unrestricted` is gone."""
    admin = await gw.user("root@example.com", admin=True)
    key = await gw.key(admin, ["unrestricted"])
    await gw.services.users.update(admin, {"is_admin": False}, actor="test", action="user.demote")
    reply = await gw.api.post("/api/v1/api-keys", key=key.text, json_body={})
    assert reply.status == 403
    assert reply.json()["missingPermission"] == "unrestricted"


@pytest.mark.parametrize("scheme", ["token", "Bearer", "x-api-key"])
async def test_any_valid_key_sees_itself_through_every_carrier(gw: Gateway, scheme: str) -> None:
    """GET current works for a key with no permission at all, in every key carrier."""
    user = await gw.user("ann@example.com")
    key = await gw.key(user, [])
    reply = await gw.api.get("/api/v1/api-keys/current", key=key.text, scheme=scheme)
    assert reply.status == 200
    assert reply.json() == {"apiKey": key.text, "label": "test", "permissions": []}


async def test_current_with_haplo_basic(gw: Gateway) -> None:
    """Basic haplo:<key> is a key credential and reaches `current` too."""
    user = await gw.user("ann@example.com", grants=["demo.reports.read"])
    key = await gw.key(user, ["demo.reports.read"])
    reply = await gw.api.get("/api/v1/api-keys/current", basic=("haplo", key.text))
    assert reply.status == 200
    assert reply.json()["apiKey"] == key.text


async def test_disabled_key_calling_current_is_401(gw: Gateway) -> None:
    """A disabled key is refused by `current` with 401 `unauthenticated` saying why."""
    user = await gw.user("ann@example.com")
    key = await gw.key(user, [])
    await gw.services.keys.set_status(key.record, "disabled", actor=None)
    reply = await gw.api.get("/api/v1/api-keys/current", key=key.text)
    assert reply.status == 401
    assert reply.json() == {"code": "unauthenticated", "message": "the API key is disabled"}
    assert "WWW-Authenticate" in reply.headers


async def test_current_needs_a_key_not_a_password(gw: Gateway) -> None:
    """Basic email:password has no `current` key: 401 in Greenfield shape."""
    await gw.user("ann@example.com", password=PASSWORD)
    reply = await gw.api.get("/api/v1/api-keys/current", basic=("ann@example.com", PASSWORD))
    assert reply.status == 401
    assert reply.json()["code"] == "unauthenticated"


async def test_delete_current_returns_the_revoked_key_and_it_stops_working(
    store_url: str, redis_url: str, aiohttp_client: Any
) -> None:
    """DELETE current answers 200 with its ApiKeyData; the key is refused right after."""
    gw = await start_gateway(aiohttp_client, make_settings(store_url, redis_url=redis_url))
    user = await gw.user("ann@example.com")
    key = await gw.key(user, [])
    assert (await gw.api.get("/api/v1/api-keys/current", key=key.text)).status == 200  # cached
    reply = await gw.api.delete("/api/v1/api-keys/current", key=key.text)
    assert reply.status == 200
    assert reply.json() == {"apiKey": key.text, "label": "test", "permissions": []}
    again = await gw.api.get("/api/v1/api-keys/current", key=key.text)
    assert again.status == 401
    audit = await gw.services.store.list_audit(target=f"key:{key.record.id}")
    assert [a.action for a in audit][:1] == ["key.revoke"]


@pytest.mark.parametrize("by", ["id", "whole key"])
async def test_revoke_own_key_by_id_or_whole_key(gw: Gateway, by: str) -> None:
    """DELETE /api/v1/api-keys/{apikey} takes the public id or the key; empty 200 (BTCPay's)."""
    await gw.user("ann@example.com", password=PASSWORD)
    ann = ("ann@example.com", PASSWORD)
    created = (await gw.api.post("/api/v1/api-keys", basic=ann, json_body={})).json()["apiKey"]
    key_id = keyformat.parse(created).key_id
    segment = key_id if by == "id" else created
    reply = await gw.api.delete(f"/api/v1/api-keys/{segment}", basic=ann)
    assert reply.status == 200
    assert reply.body == b""
    assert (await gw.api.get("/api/v1/api-keys/current", key=created)).status == 401


async def test_revoking_another_users_key_is_not_found(gw: Gateway) -> None:
    """A key revoking someone else's key gets 404 apikey-not-found, and that key survives."""
    admin = await gw.user("root@example.com", admin=True)
    mine = await gw.key(admin, ["unrestricted"])
    other = await gw.user("bob@example.com")
    theirs = await gw.key(other, [])
    for segment in (theirs.record.id, theirs.text):
        reply = await gw.api.delete(f"/api/v1/api-keys/{segment}", key=mine.text)
        assert reply.status == 404
        assert reply.json() == {"code": "apikey-not-found", "message": "API key not found"}
    unknown = await gw.api.delete("/api/v1/api-keys/apk_0000000000000000", key=mine.text)
    assert unknown.json() == reply.json()  # the same answer as for an existing key
    assert (await gw.api.get("/api/v1/api-keys/current", key=theirs.text)).status == 200


async def test_users_endpoints_require_unrestricted_without_btcpay_catalog(gw: Gateway) -> None:
    """With a catalog lacking canmanageusers, creating another user's key needs unrestricted."""
    admin = await gw.user("root@example.com", admin=True)
    limited = await gw.key(admin, ["demo.reports.read"])
    full = await gw.key(admin, ["unrestricted"])
    bob = await gw.user("bob@example.com", grants=["demo.reports.read"])
    denied = await gw.api.post(
        f"/api/v1/users/{bob.email}/api-keys", key=limited.text, json_body={}
    )
    assert denied.status == 403
    assert denied.json()["missingPermission"] == "unrestricted"
    made = await gw.api.post(
        f"/api/v1/users/{bob.id}/api-keys",
        key=full.text,
        json_body={"label": "for bob", "permissions": ["demo.reports.read"]},
    )
    assert made.status == 200
    assert made.json()["permissions"] == ["demo.reports.read"]
    [bobs] = await gw.services.keys.list_for(bob.id)
    assert bobs.label == "for bob"


async def test_users_endpoints_with_btcpay_catalog_need_canmanageusers_and_admin(
    btcpay_gw: Gateway,
) -> None:
    """With BTCPay's catalog an admin key holding canmanageusers may create and revoke a user's
    keys; a non-admin holding it may not; an admin key without it may not."""
    gw = btcpay_gw
    admin = await gw.user("root@example.com", admin=True)
    manager = await gw.key(admin, ["btcpay.server.canmanageusers"])
    no_manage = await gw.key(admin, ["btcpay.store.canviewinvoices"])
    helper = await gw.user("helper@example.com", grants=["btcpay.server.canmanageusers"])
    helper_key = await gw.key(helper, ["btcpay.server.canmanageusers"])
    bob = await gw.user("bob@example.com", grants=["btcpay.server.cancreateuser"])

    made = await gw.api.post(
        f"/api/v1/users/{bob.email}/api-keys",
        key=manager.text,
        json_body={"permissions": ["btcpay.server.cancreateuser"]},  # implied by canmanageusers
    )
    assert made.status == 200
    stronger = await gw.api.post(
        f"/api/v1/users/{bob.email}/api-keys",
        key=manager.text,
        json_body={"permissions": ["btcpay.store.canviewinvoices"]},
    )
    assert stronger.status == 403  # bob lacks it, and so does the calling key
    missing = await gw.api.post(f"/api/v1/users/{bob.email}/api-keys", key=no_manage.text)
    assert missing.status == 403
    assert missing.json()["missingPermission"] == "btcpay.server.canmanageusers"
    not_admin = await gw.api.post(f"/api/v1/users/{bob.email}/api-keys", key=helper_key.text)
    assert not_admin.status == 403
    assert not_admin.json()["code"] == "admin-required"

    bobs_key = keyformat.parse(made.json()["apiKey"]).key_id
    wrong_user = await gw.api.delete(
        f"/api/v1/users/{helper.id}/api-keys/{bobs_key}", key=manager.text
    )
    assert wrong_user.status == 404
    gone = await gw.api.delete(f"/api/v1/users/{bob.id}/api-keys/{bobs_key}", key=manager.text)
    assert gone.status == 200
    assert gone.body == b""
    assert await gw.services.keys.list_for(bob.id) == []


async def test_unknown_user_is_user_not_found(gw: Gateway) -> None:
    """Creating a key for a user who does not exist: 404 user-not-found."""
    admin = await gw.user("root@example.com", admin=True)
    key = await gw.key(admin, ["unrestricted"])
    reply = await gw.api.post(
        "/api/v1/users/nobody@example.com/api-keys", key=key.text, json_body={}
    )
    assert reply.status == 404
    assert reply.json() == {"code": "user-not-found", "message": "user not found"}


async def test_no_credential_is_401_unauthenticated(gw: Gateway) -> None:
    """Without a credential every Greenfield endpoint answers 401 `unauthenticated` as JSON."""
    for method, path in [
        ("POST", "/api/v1/api-keys"),
        ("GET", "/api/v1/api-keys/current"),
        ("DELETE", "/api/v1/api-keys/current"),
        ("DELETE", "/api/v1/api-keys/apk_0000000000000000"),
        ("POST", "/api/v1/users/x@example.com/api-keys"),
        ("DELETE", "/api/v1/users/x@example.com/api-keys/apk_0000000000000000"),
    ]:
        reply = await gw.api.request(method, path)
        assert reply.status == 401, (method, path)
        assert reply.json()["code"] == "unauthenticated"
        assert "WWW-Authenticate" in reply.headers


async def test_disabled_user_and_wrong_password_are_401_then_throttled(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """Basic with a wrong password or a disabled user is 401; after N failures on one account
    the next try is 429 with Retry-After, even with the right password."""
    gw = await start_gateway(aiohttp_client, make_settings(sqlite_url, login_max_failures=3))
    ann = await gw.user("ann@example.com", password=PASSWORD)
    await gw.user("bob@example.com", password=PASSWORD)
    await gw.services.users.set_disabled(ann, True, actor="test")
    wrong = await gw.api.post("/api/v1/api-keys", basic=("bob@example.com", "wrong password"))
    assert wrong.status == 401
    assert wrong.json() == {"code": "unauthenticated", "message": "the email or password is wrong"}
    disabled = await gw.api.post("/api/v1/api-keys", basic=("ann@example.com", PASSWORD))
    assert disabled.status == 401
    unknown = await gw.api.post("/api/v1/api-keys", basic=("nobody@example.com", PASSWORD))
    assert unknown.status == 401
    for _ in range(2):
        again = await gw.api.post("/api/v1/api-keys", basic=("bob@example.com", "wrong again"))
        assert again.status == 401
    throttled = await gw.api.post("/api/v1/api-keys", basic=("bob@example.com", PASSWORD))
    assert throttled.status == 429
    assert throttled.json()["code"] == "too-many-requests"
    assert int(throttled.headers["Retry-After"]) > 0
    # Keys are not passwords: they are never throttled.
    admin = await gw.user("root@example.com", admin=True)
    key = await gw.key(admin, ["unrestricted"])
    assert (await gw.api.post("/api/v1/api-keys", key=key.text)).status == 200


async def test_password_budget_is_shared_with_the_login_page(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """Failures spent elsewhere (the login page uses the same check) block Basic auth here:
    one budget per account, not one per surface."""
    gw = await start_gateway(aiohttp_client, make_settings(sqlite_url, login_max_failures=3))
    await gw.user("bob@example.com", password=PASSWORD)
    for _ in range(3):
        assert await gw.services.check_password("bob@example.com", "wrong", "203.0.113.9") is None
    throttled = await gw.api.post("/api/v1/api-keys", basic=("bob@example.com", PASSWORD))
    assert throttled.status == 429

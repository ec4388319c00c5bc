"""Imported (legacy) keys where keys are listed and addressed: the admin API's `legacy` field
(checked against the OpenAPI document), the key page, Greenfield's DELETE by the key itself,
and the setting that keeps them out when off."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from gateway.importer.apply import apply_plan, read_existing
from gateway.importer.export import read_export
from gateway.importer.plan import plan_import
from gateway.services import Services
from tests.conftest import EXAMPLE_POLICY, make_settings
from tests.e2e.support import PASSWORD, login
from tests.openapi_check import Gateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
BTCPAY_POLICY = ROOT / "policies" / "btcpay-greenfield.yaml"


async def import_key(services: Services, text: str) -> str:
    """Import one BTCPay key of owner@example.com (Owner of S1) in process; his user id."""
    raw = json.dumps(
        {
            "format": "btcpay-export",
            "version": 1,
            "users": [{"id": "u1", "email": "owner@example.com"}],
            "stores": [{"id": "S1", "name": "Main shop"}],
            "storeUsers": [{"userId": "u1", "storeId": "S1", "role": "Owner"}],
            "apiKeys": [
                {
                    "key": text,
                    "userId": "u1",
                    "label": "shop sync",
                    "permissions": ["btcpay.store.canviewinvoices:S1"],
                }
            ],
        }
    ).encode()
    source = read_export(raw, "test")
    catalog = services.policy.catalog
    existing = await read_existing(services.store, source, services.hasher, "store")
    plan = plan_import(source, catalog, existing, services.hasher.digest, "store")
    written = await apply_plan(
        plan,
        store=services.store,
        users=services.users,
        hasher=services.hasher,
        prefix="apk",
        store_type="store",
        invalidate=services.verifier.invalidate,
    )
    assert len(written.keys) == 1
    owner = await services.users.find("owner@example.com")
    await services.users.set_password(owner, PASSWORD, actor="test")
    return owner.id


async def legacy_gateway(aiohttp_client: Any, sqlite_url: str, *, accept: bool) -> Gateway:
    settings = make_settings(
        sqlite_url, policy=(BTCPAY_POLICY, EXAMPLE_POLICY), accept_legacy_keys=accept
    )
    return await start_gateway(aiohttp_client, settings)


async def test_listings_mark_legacy_keys(aiohttp_client: Any, sqlite_url: str) -> None:
    """The admin API lists an imported key with `legacy: "btcpay"` (ours: null), and the key
    page says it is a legacy key imported from BTCPay Server."""
    gw = await legacy_gateway(aiohttp_client, sqlite_url, accept=True)
    text = secrets.token_hex(20)
    owner_id = await import_key(gw.services, text)
    owner = await gw.services.users.find(owner_id)
    ours = await gw.key(owner, ["btcpay.store.canviewinvoices:S1"])
    admin = await gw.user("root@example.com", admin=True)
    admin_key = await gw.key(admin, ["unrestricted"])
    listing = await gw.api.get(f"/v1/admin/users/{owner_id}/keys", key=admin_key.text)
    assert listing.status == 200
    marks = {k["name"]: k["legacy"] for k in listing.json()["items"]}
    assert marks == {"shop sync": "btcpay", "test": None}
    assert text not in listing.text

    await login(gw.raw, "owner@example.com")
    page = await gw.raw.get("/account/api-keys")
    html = await page.text()
    assert page.status == 200
    assert html.count("Legacy key imported from BTCPay Server") == 1
    assert text not in html
    assert ours.text not in html


async def test_greenfield_revokes_a_legacy_key_named_by_itself(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """DELETE /api/v1/api-keys/{apikey} takes a legacy key itself (found by its hash); the
    answer is masked and the key is refused right after."""
    gw = await legacy_gateway(aiohttp_client, sqlite_url, accept=True)
    text = secrets.token_hex(20)
    await import_key(gw.services, text)
    assert (await gw.api.get("/api/v1/api-keys/current", key=text)).status == 200
    other = secrets.token_hex(20)
    missing = await gw.api.delete(
        f"/api/v1/api-keys/{other}", basic=("owner@example.com", PASSWORD)
    )
    assert missing.status == 404
    gone = await gw.api.delete(f"/api/v1/api-keys/{text}", basic=("owner@example.com", PASSWORD))
    assert gone.status == 200
    assert gone.json()["apiKey"].startswith("apk_")
    assert text not in gone.text
    refused = await gw.api.get("/api/v1/api-keys/current", key=text)
    assert refused.status == 401
    assert refused.json()["code"] == "unauthenticated"
    audit = await gw.services.store.list_audit()
    [revoked] = [a for a in audit if a.action == "key.revoke"]
    assert revoked.detail == {"legacy": "btcpay"}
    assert text not in str([a.detail for a in audit])


async def test_without_the_setting_legacy_keys_are_malformed_without_a_lookup(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """accept_legacy_keys off (the default): an imported key and a random 40-hex string are
    both refused as malformed, and neither costs a database lookup."""
    gw = await legacy_gateway(aiohttp_client, sqlite_url, accept=False)
    text = secrets.token_hex(20)
    await import_key(gw.services, text)
    before = gw.services.verifier.lookups
    for key in (text, secrets.token_hex(20)):
        reply = await gw.api.get("/api/v1/api-keys/current", key=key, scheme="x-api-key")
        assert reply.status == 401
    assert gw.services.verifier.lookups == before
    named = await gw.api.delete(f"/api/v1/api-keys/{text}", basic=("owner@example.com", PASSWORD))
    assert named.status == 404

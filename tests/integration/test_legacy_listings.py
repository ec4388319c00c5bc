"""Imported (legacy) keys where keys are listed and addressed: the admin API's `legacy` field
(checked against the OpenAPI document), the key page, Greenfield's DELETE by the key itself,
and the setting that keeps them out when off."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path
from typing import Any

from gateway.importer.apply import apply_plan, read_existing
from gateway.importer.export import read_export
from gateway.importer.plan import plan_import
from gateway.services import Services
from tests.conftest import EXAMPLE_POLICY, make_settings
from tests.e2e.support import PASSWORD, login
from tests.integration.faults import run_cli
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
    answer is BTCPay's empty 200 and the key is refused right after."""
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
    assert gone.text == ""
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


async def test_a_key_tried_before_its_import_works_at_once_after_it(
    aiohttp_client: Any, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A client that sent its BTCPay key before the import left it in the negative caches (in
    process and in Redis, for a minute here); the import, run as a command in another
    process, clears them through Redis, so the key works right away."""
    secret = secrets.token_hex(32)
    settings = make_settings(
        sqlite_url,
        policy=(BTCPAY_POLICY,),
        accept_legacy_keys=True,
        redis_url=redis_url,
        redis_namespace=f"legacy{secrets.token_hex(4)}",
        negative_cache_ttl=60.0,
        secret=secret.encode(),
    )
    gw = await start_gateway(aiohttp_client, settings)
    text = secrets.token_hex(20)
    verifier = gw.services.verifier
    # Until the instance's invalidation channel is up, its caches may be reset; ask until the
    # answer comes from the negative cache (no database lookup).
    for _ in range(50):
        lookups = verifier.lookups
        before = await gw.api.get("/api/v1/api-keys/current", key=text)
        assert before.status == 401
        if verifier.lookups == lookups:
            break
        await asyncio.sleep(0.1)
    assert verifier.lookups == lookups, "the unknown key was never served from the cache"
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps(
            {
                "format": "btcpay-export",
                "version": 1,
                "users": [{"id": "u1", "email": "owner@example.com"}],
                "apiKeys": [{"key": text, "userId": "u1", "label": "early"}],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_DATABASE_URL=sqlite_url,
        GATEWAY_SECRET=secret,
        GATEWAY_POLICY=str(BTCPAY_POLICY),
        GATEWAY_REDIS_URL=redis_url,
        GATEWAY_REDIS_NAMESPACE=settings.redis_namespace,
        PYTHONPATH=str(ROOT),
    )
    status, out, err = await run_cli(env, "import", "btcpay", str(export), seconds=60)
    assert status == 0, err
    assert "keys: 1 imported" in out
    for _ in range(100):  # 5 s at most: far below the negative entries' minute
        after = await gw.api.get("/api/v1/api-keys/current", key=text)
        if after.status == 200:
            break
        await asyncio.sleep(0.05)
    assert after.status == 200

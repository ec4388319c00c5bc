"""Least privilege and idle keys through real requests: which permissions a request mix used
(on both servers, recorded off the request path), `GET /v1/apikeys/{id}/usage`, "narrow this
key", and the idle-key sweep."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import Unauthenticated
from gateway.keys import idle
from gateway.services import Services, flush_bookkeeping, open_services
from gateway.settings import load_settings
from gateway.state import SERVICES
from gateway.store.base import ApiKey, Audit
from tests.conftest import make_settings
from tests.integration.gateways import MakeGateway
from tests.integration.test_users_keys import REPORTS, VIEW, make_user, mint
from tests.openapi_check import start_gateway

ROOT = Path(__file__).resolve().parents[2]


async def test_a_request_mix_records_the_permissions_it_used(make_gateway: MakeGateway) -> None:
    """Allowed /api requests (t.read) mark t.read used; a public route, a refused request and
    a bad key mark nothing; t.admin, never needed, stays unused."""
    gw = await make_gateway(permissions=("t.read", "t.admin"))
    before = datetime.now(UTC)
    for path in ("/api/a", "/api/b?x=1", "/api/c"):
        async with gw.client.get(path, headers=gw.auth) as response:
            assert response.status == 200
    async with gw.client.get("/public/x") as response:
        assert response.status == 200
    async with gw.client.get("/api/a", headers={"X-API-KEY": "apk_" + "0" * 54}) as response:
        assert response.status == 401
    if gw.process is None:
        services = gw.client.app[SERVICES]  # type: ignore[union-attr]
        await flush_bookkeeping(services)
        used = (await services.store.permission_use([gw.key_id]))[gw.key_id]
    else:
        gw.process.terminate()  # a graceful stop flushes what it noted
        await asyncio.wait_for(gw.process.wait(), 20)
        assert gw.env is not None
        async with open_services(load_settings(environ=gw.env), migrate=False) as services:
            used = (await services.store.permission_use([gw.key_id]))[gw.key_id]
    assert set(used) == {"t.read"}
    assert before - timedelta(seconds=1) <= used["t.read"] <= datetime.now(UTC)


async def backdate(services: Services, key: ApiKey, days: float) -> ApiKey:
    """The same key as if created `days` ago (stored again: creation times are not updated)."""
    aged = dataclasses.replace(key, created_at=key.created_at - timedelta(days=days))
    await services.store.delete_key(key.id, Audit("test", "test.backdate", f"key:{key.id}"))
    await services.store.create_key(aged, Audit("test", "test.backdate", f"key:{key.id}"))
    return aged


async def test_usage_api_and_narrowing(aiohttp_client: Any, sqlite_url: str) -> None:
    """GET /v1/apikeys/{id}/usage shows last use per permission and the unused ones of a key
    older than the window; rotate {"narrow": true} keeps only the used ones."""
    gw = await start_gateway(
        aiohttp_client, make_settings(sqlite_url, idle_key_days=90.0, unused_permission_days=30.0)
    )
    owner = await gw.user("shop@example.com", grants=(REPORTS, VIEW, "unrestricted"))
    manager = await gw.key(owner, ["unrestricted"])
    key = await gw.key(owner, [REPORTS, VIEW])
    aged = await backdate(gw.services, key.record, 60)
    now = datetime.now(UTC)
    await gw.services.store.record_permission_use([(aged.id, REPORTS, now)])
    reply = await gw.api.get(f"/v1/apikeys/{aged.id}/usage", key=manager.text)
    assert reply.status == 200, reply.text()
    body = reply.json()
    assert body["unused"] == [VIEW]
    assert [p["permission"] for p in body["permissions"]] == [REPORTS, VIEW]
    assert body["permissions"][0]["lastUsedAt"] is not None
    assert body["idleDisableAt"] is not None  # never used: 90 days after its creation
    reply = await gw.api.post(
        f"/v1/apikeys/{aged.id}/rotate", key=manager.text, json_body={"narrow": True}
    )
    assert reply.status == 201, reply.text()
    assert reply.json()["scopes"] == REPORTS
    both = await gw.api.post(
        f"/v1/apikeys/{manager.record.id}/rotate",
        key=manager.text,
        json_body={"narrow": True, "scopes": "x"},
    )
    assert both.status == 422


async def test_idle_keys_are_disabled_everywhere_and_audited(services: Services) -> None:
    """The sweep disables keys unused for the window (never used: since creation), keeps a
    recently used one, audits `key.idle-disable`, and the verifier refuses the disabled key."""
    owner = await make_user(services)
    unused = await mint(services, owner, REPORTS)
    used = await mint(services, owner, REPORTS)
    await services.verifier.verify(unused.text)  # cached: the sweep must reach the cache too
    later = datetime.now(UTC) + timedelta(days=40)
    await services.store.touch_keys({used.record.id: later - timedelta(days=1)})
    disabled = await idle.sweep(services.store, 30, now=later)
    assert [k.id for k in disabled] == [unused.record.id]
    assert await idle.sweep(services.store, 30, now=later) == []  # once
    [entry] = await services.store.list_audit(target=f"key:{unused.record.id}", limit=1)
    assert (entry.action, entry.actor) == ("key.idle-disable", "system")
    # The sweep wrote an invalidation record; the poller (or Redis) delivers it. Here the
    # record is applied as the poller would.
    [record] = [
        r
        for r in await services.store.read_invalidations(0, 100)
        if r.key_hash == unused.record.key_hash
    ][-1:]
    services.verifier.invalidated(record.key_hash, record.id)
    with pytest.raises(Unauthenticated) as refused:
        await services.verifier.verify(unused.text)
    assert refused.value.code == "key-disabled"

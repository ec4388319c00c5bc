"""Haplo's key semantics through the APIs, checked on a real proxied route: path
restrictions, service users, password changes, disabling users, grants narrowing keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import make_settings
from tests.openapi_check import Gateway, basic_token, start_gateway

PASSWORD = "correct horse battery"

POLICY = """
permissions:
  - name: reports.read
    title: Read reports
  - name: apikey:manage
    title: Manage keys
    implies: ["apikey:read"]
  - name: apikey:read
    title: Read keys
upstreams:
  app:
    url: {url}
routes:
  - path: /api/reports/**
    methods: [GET]
    upstream: app
    permission: reports.read
  - path: /api/reportsX
    methods: [GET]
    upstream: app
    permission: reports.read
"""


async def _upstream(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path})


@pytest.fixture
async def gw(aiohttp_client: Any, aiohttp_server: Any, sqlite_url: str, tmp_path: Path) -> Gateway:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _upstream)
    upstream = await aiohttp_server(app)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=f"http://127.0.0.1:{upstream.port}"))
    return await start_gateway(aiohttp_client, make_settings(sqlite_url, policy=(policy,)))


async def proxied(gw: Gateway, path: str, key: str) -> int:
    async with gw.raw.get(
        path, headers={"Authorization": "Basic " + basic_token("haplo", key)}
    ) as r:
        return r.status


async def test_path_restriction_on_segments_and_on_the_management_api(gw: Gateway) -> None:
    """A key created with path /api/reports reaches /api/reports/x, not /api/reportsX, and cannot
    manage keys; `current` still answers for it."""
    owner = await gw.user("ops@example.com", grants=["reports.read", "apikey:manage"])
    manager = await gw.key(owner, ["reports.read", "apikey:manage"])
    made = await gw.api.post(
        "/v1/apikeys",
        key=manager.text,
        json_body={
            "name": "reports only",
            "scopes": "reports.read apikey:manage",
            "path": "/api/reports",
        },
    )
    assert made.status == 201
    assert made.json()["path"] == "/api/reports"
    limited = made.json()["key"]
    assert await proxied(gw, "/api/reports/daily", limited) == 200
    assert await proxied(gw, "/api/reportsX", limited) == 403
    assert await proxied(gw, "/api/reportsX", manager.text) == 200
    refused = await gw.api.get("/v1/apikeys", key=limited)
    assert refused.status == 403
    assert refused.json()["code"] == "path-not-allowed"
    assert (await gw.api.get("/api/v1/api-keys/current", key=limited)).status == 200
    exact = await gw.api.post(
        "/v1/apikeys",
        key=manager.text,
        json_body={"name": "one report", "scopes": "reports.read", "path": "=/api/reports/daily"},
    )
    assert await proxied(gw, "/api/reports/daily", exact.json()["key"]) == 200
    assert await proxied(gw, "/api/reports/weekly", exact.json()["key"]) == 403


async def test_a_restricted_key_mints_only_within_its_path(gw: Gateway) -> None:
    """A key limited to /v1 can mint keys limited within /v1, never wider or unrestricted."""
    owner = await gw.user("ops@example.com", grants=["reports.read", "apikey:manage"])
    scoped = await gw.key(owner, ["apikey:manage", "reports.read"], path="/v1")
    inside = await gw.api.post(
        "/v1/apikeys", key=scoped.text, json_body={"name": "a", "scopes": "", "path": "/v1/apikeys"}
    )
    assert inside.status == 201
    for path in (None, "/", "/api/reports"):
        wider = await gw.api.post(
            "/v1/apikeys", key=scoped.text, json_body={"name": "b", "scopes": "", "path": path}
        )
        assert wider.status == 403, path
        assert wider.json()["code"] == "path-not-allowed"
    bad = await gw.api.post(
        "/v1/apikeys", key=scoped.text, json_body={"name": "c", "scopes": "", "path": "/v1/../api"}
    )
    assert bad.status == 422
    assert bad.json()["errors"][0]["path"] == "path"


async def test_service_users_own_keys_but_cannot_log_in(gw: Gateway) -> None:
    """A service user's key works on the data plane; Basic email:password for him is 401
    (a service user has no password to check)."""
    admin = await gw.user("root@example.com", admin=True)
    admin_key = await gw.key(admin, ["unrestricted"])
    created = await gw.api.post(
        "/v1/admin/users",
        key=admin_key.text,
        json_body={"email": "sync@example.com", "service": True, "grants": ["reports.read"]},
    )
    service_id = created.json()["id"]
    minted = await gw.api.post(
        f"/api/v1/users/{service_id}/api-keys",
        key=admin_key.text,
        json_body={"label": "sync", "permissions": ["reports.read"]},
    )
    assert minted.status == 200
    assert await proxied(gw, "/api/reports/x", minted.json()["apiKey"]) == 200
    for password in ("anything at all", PASSWORD):
        login = await gw.api.post("/api/v1/api-keys", basic=("sync@example.com", password))
        assert login.status == 401


async def test_password_change_does_not_revoke_keys(gw: Gateway) -> None:
    """After the owner's password changes, his keys still pass the data plane (Haplo)."""
    ann = await gw.user("ann@example.com", password=PASSWORD, grants=["reports.read"])
    key = await gw.key(ann, ["reports.read"])
    await gw.services.users.set_password(ann, "another long passphrase", actor="test")
    assert await proxied(gw, "/api/reports/x", key.text) == 200


async def test_disabling_a_user_stops_every_key_and_grants_narrow_keys(gw: Gateway) -> None:
    """Disabling the owner refuses all his keys at once; re-enabling restores them; taking a
    grant away narrows his existing keys on their next request."""
    admin = await gw.user("root@example.com", admin=True)
    admin_key = await gw.key(admin, ["unrestricted"])
    ann = await gw.user("ann@example.com", grants=["reports.read"])
    keys = [await gw.key(ann, ["reports.read"]) for _ in range(2)]
    assert [await proxied(gw, "/api/reports/x", k.text) for k in keys] == [200, 200]
    await gw.api.patch(
        f"/v1/admin/users/{ann.id}", key=admin_key.text, json_body={"disabled": True}
    )
    assert [await proxied(gw, "/api/reports/x", k.text) for k in keys] == [401, 401]
    await gw.api.patch(
        f"/v1/admin/users/{ann.id}", key=admin_key.text, json_body={"disabled": False}
    )
    assert [await proxied(gw, "/api/reports/x", k.text) for k in keys] == [200, 200]
    await gw.api.patch(f"/v1/admin/users/{ann.id}", key=admin_key.text, json_body={"grants": []})
    assert [await proxied(gw, "/api/reports/x", k.text) for k in keys] == [403, 403]


async def test_trailing_slash_restriction_admits_only_below(gw: Gateway) -> None:
    """Haplo: a key restricted to `/api/reports/` is refused `/api/reports` itself and allowed
    below it; `/api/reports` (no slash) allows both. The rule is kept as written."""
    owner = await gw.user("ops@example.com", grants=["reports.read", "apikey:manage"])
    manager = await gw.key(owner, ["reports.read", "apikey:manage"])
    made = {}
    for rule in ("/api/reports/", "/api/reports"):
        reply = await gw.api.post(
            "/v1/apikeys",
            key=manager.text,
            json_body={"name": rule, "scopes": "reports.read", "path": rule},
        )
        assert reply.status == 201
        assert reply.json()["path"] == rule
        made[rule] = reply.json()["key"]
    below = made["/api/reports/"]
    assert await proxied(gw, "/api/reports", below) == 403
    assert await proxied(gw, "/api/reports/", below) == 200
    assert await proxied(gw, "/api/reports/daily", below) == 200
    assert await proxied(gw, "/api/reportsX", below) == 403
    assert await proxied(gw, "/api/reports", made["/api/reports"]) == 200
    assert await proxied(gw, "/api/reports/daily", made["/api/reports"]) == 200

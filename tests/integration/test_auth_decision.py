"""The authorization decision end to end through a served app: routes, path restrictions,
permissions with resource binding and implication, the owner's current grants, and targets
refused before any of it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.services import Services
from gateway.settings import Settings
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.integration.test_auth_support import (
    new_key,
    new_user,
    policy_for,
    raw_request,
)
from tests.integration.upstream import EchoUpstream

PROBLEM = "application/problem+json"
ALL_GRANTS = ("demo.store.canmodifystoresettings", "demo.reports.read", "demo.legacy.access")


@pytest.fixture
async def upstream() -> AsyncIterator[EchoUpstream]:
    async with EchoUpstream() as upstream:
        yield upstream


@pytest.fixture
def settings(pg_url: str, redis_url: str, upstream: EchoUpstream, tmp_path: Path) -> Settings:
    return make_settings(
        pg_url,
        redis_url=redis_url,
        redis_namespace=f"kgtest{uuid.uuid4().hex[:10]}",
        policy=(policy_for(tmp_path, upstream.url),),
    )


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Any) -> Any:
    # `settings` first: its database must outlive the app, so it is set up before the client.
    return await aiohttp_client(create_app(settings))


def services_of(client: Any) -> Services:
    return client.app[SERVICES]  # type: ignore[no-any-return]


async def key_for(
    client: Any,
    permissions: Sequence[str],
    *,
    path: str | None = None,
    grants: Sequence[str] = ALL_GRANTS,
) -> str:
    services = services_of(client)
    owner = await new_user(services, f"{uuid.uuid4().hex[:8]}@example.com", grants)
    return (await new_key(services, owner, permissions, path=path)).text


async def problem_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == PROBLEM
    body: dict[str, Any] = await response.json(content_type=PROBLEM)
    assert body["status"] == status
    return body


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nowhere"), ("GET", "/api"), ("POST", "/api/reports/daily"), ("GET", "/")],
)
async def test_an_unrouted_request_is_404_even_with_a_valid_key(
    client: Any, method: str, path: str
) -> None:
    """No route (or no route for the method) is 404 problem+json, never forwarded."""
    admin = await new_user(services_of(client), "admin@example.com", admin=True)
    key = (await new_key(services_of(client), admin, ["unrestricted"])).text
    body = await problem_of(await client.request(method, path, headers={"X-API-KEY": key}), 404)
    assert body["code"] == "no-route"


async def test_auth_none_routes_need_no_credential(client: Any) -> None:
    """`auth: none` routes are forwarded without a credential."""
    response = await client.get("/public/docs/index.html")
    assert response.status == 200
    assert (await response.json())["target"] == "/public/docs/index.html"


@pytest.mark.parametrize(
    ("rule", "target", "status"),
    [
        ("/api/reports/daily", "/api/reports/daily", 200),
        ("/api/reports/daily", "/api/reports/daily/", 200),
        ("/api/reports/daily", "/api/reports/daily/2024", 200),
        ("/api/reports/daily", "/api/reports/daily?format=csv", 200),
        ("/api/reports/daily", "/api/reports/dailyX", 403),
        ("/api/reports/daily", "/api/reports/weekly", 403),
        ("/api/reports/daily", "/api/reports/daily/../weekly", 403),
        ("=/api/reports/daily", "/api/reports/daily", 200),
        ("=/api/reports/daily", "/api/reports/daily?x=1", 200),
        ("=/api/reports/daily", "/api/reports/daily/", 403),
        ("=/api/reports/daily", "/api/reports/daily/2024", 403),
    ],
)
async def test_a_key_path_restriction_holds_on_segment_boundaries(
    client: Any, rule: str, target: str, status: int
) -> None:
    """`/prefix` admits whole segments below it, `=/exact` one path; the query is ignored."""
    key = await key_for(client, ["demo.reports.read"], path=rule)
    request = f"GET {target} HTTP/1.1\r\nHost: gw\r\nX-API-KEY: {key}\r\nConnection: close\r\n\r\n"
    answer, headers, body = await raw_request(client.server.port, request.encode())
    assert answer == status, body
    if status == 403:
        assert headers["content-type"] == PROBLEM
        assert b'"code": "path-not-allowed"' in body
        assert f'"allowedPath": "{rule}"'.encode() in body


@pytest.mark.parametrize(
    ("permissions", "method", "path", "status", "missing"),
    [
        (["demo.store.canviewinvoices:S1"], "GET", "/api/v1/stores/S1/invoices", 200, None),
        (
            ["demo.store.canviewinvoices:S1"],
            "GET",
            "/api/v1/stores/S2/invoices",
            403,
            "demo.store.canviewinvoices:S2",
        ),
        (
            ["demo.store.canviewinvoices:S1"],
            "POST",
            "/api/v1/stores/S1/invoices",
            403,
            "demo.store.canmodifystoresettings:S1",
        ),
        (["demo.store.canviewinvoices"], "GET", "/api/v1/stores/S9/invoices", 200, None),
        (["demo.store.canmodifystoresettings:S1"], "GET", "/api/v1/stores/S1/invoices", 200, None),
        (["demo.store.canmodifystoresettings:S1"], "POST", "/api/v1/stores/S1/invoices", 200, None),
        (
            ["demo.store.canmodifystoresettings:S1"],
            "GET",
            "/api/v1/stores/S2/invoices",
            403,
            "demo.store.canviewinvoices:S2",
        ),
        (["demo.store.canmodifystoresettings"], "PUT", "/api/v1/stores/S3/settings", 200, None),
        (["demo.reports.read"], "GET", "/api/v1/stores/S1/invoices", 403, None),
    ],
)
async def test_permissions_bind_path_parameters_and_follow_implication(
    client: Any,
    permissions: list[str],
    method: str,
    path: str,
    status: int,
    missing: str | None,
) -> None:
    """`{storeId}` scopes the requirement; implied and unscoped permissions satisfy it; a 403
    names the missing permission."""
    key = await key_for(client, permissions)
    response = await client.request(method, path, headers={"X-API-KEY": key})
    if status == 200:
        assert response.status == 200
        assert (await response.json())["target"] == path
        return
    body = await problem_of(response, 403)
    assert body["code"] == "missing-permission"
    if missing is not None:
        assert body["missingPermission"] == missing


async def test_revoking_an_owner_grant_narrows_his_keys_at_once(client: Any) -> None:
    """A key is limited by its owner's current grants: revoking a grant refuses the key on
    the next request, although the key itself is cached and unchanged."""
    services = services_of(client)
    owner = await new_user(services, "owner@example.com", ["demo.reports.read"])
    key = (await new_key(services, owner, ["demo.reports.read"])).text
    headers = {"X-API-KEY": key}
    assert (await client.get("/api/reports/daily", headers=headers)).status == 200
    await services.users.revoke_grants(owner, ["demo.reports.read"], actor="test")
    body = await problem_of(await client.get("/api/reports/daily", headers=headers), 403)
    assert body["missingPermission"] == "demo.reports.read"
    await services.users.grant(
        await services.users.find(owner.id), ["demo.reports.read"], actor="test"
    )
    assert (await client.get("/api/reports/daily", headers=headers)).status == 200


async def test_a_key_never_exceeds_a_narrowed_owner(client: Any) -> None:
    """Owner narrowed from all stores to S1: his all-stores key now reaches S1 only."""
    services = services_of(client)
    owner = await new_user(
        services,
        "shop@example.com",
        ["demo.store.canviewinvoices", "demo.store.canviewinvoices:S1"],
    )
    key = (await new_key(services, owner, ["demo.store.canviewinvoices"])).text
    headers = {"X-API-KEY": key}
    assert (await client.get("/api/v1/stores/S2/invoices", headers=headers)).status == 200
    await services.users.revoke_grants(owner, ["demo.store.canviewinvoices"], actor="test")
    assert (await client.get("/api/v1/stores/S1/invoices", headers=headers)).status == 200
    body = await problem_of(await client.get("/api/v1/stores/S2/invoices", headers=headers), 403)
    assert body["missingPermission"] == "demo.store.canviewinvoices:S2"


@pytest.mark.parametrize(
    ("target", "code"),
    [
        (b"/%2e%2e/api/reports/daily", "bad-target-dot-segment-escape"),
        (b"/a/%2e%2e/%2e%2e/api/reports/daily", "bad-target-dot-segment-escape"),
        (b"/api/reports%2fdaily", "bad-target-encoded-slash"),
        (b"/api/reports/%2F", "bad-target-encoded-slash"),
        (b"/api/reports/..;/daily", "bad-target-semicolon"),
        (b"/api/reports//daily", "bad-target-empty-segment"),
        (b"/api/reports/%252e%252e/x", "bad-target-encoded-percent"),
        (b"http://127.0.0.1:8081/api/reports/daily", "bad-target-absolute-form"),
    ],
)
async def test_confusing_targets_are_refused_with_400(
    client: Any, target: bytes, code: str
) -> None:
    """Dot segments above the root, encoded slashes, path parameters, absolute-form: 400."""
    key = await key_for(client, ["demo.reports.read"])
    request = b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\nX-API-KEY: " + key.encode()
    status, headers, body = await raw_request(
        client.server.port, request + b"\r\nConnection: close\r\n\r\n"
    )
    assert status == 400, body
    assert headers["content-type"] == PROBLEM
    assert f'"code": "{code}"'.encode() in body
    assert services_of(client).verifier.lookups == 0  # refused before the key is looked at


async def test_dot_segments_are_resolved_before_the_path_rule_is_checked(client: Any) -> None:
    """`/stores/S1/%2e%2e/S2` is `/stores/S2`: a key restricted to S1 cannot climb out."""
    key = await key_for(client, ["demo.store.canviewinvoices"], path="/api/v1/stores/S1")
    target = "/api/v1/stores/S1/%2e%2e/S2/invoices"
    request = f"GET {target} HTTP/1.1\r\nHost: gw\r\nX-API-KEY: {key}\r\nConnection: close\r\n\r\n"
    status, _, body = await raw_request(client.server.port, request.encode())
    assert status == 403
    assert b'"instance": "/api/v1/stores/S2/invoices"' in body
    allowed = "/api/v1/stores/S2/%2e%2e/S1/invoices"
    request = f"GET {allowed} HTTP/1.1\r\nHost: gw\r\nX-API-KEY: {key}\r\nConnection: close\r\n\r\n"
    status, _, body = await raw_request(client.server.port, request.encode())
    assert status == 200
    assert b'"target": "/api/v1/stores/S1/invoices"' in body  # the upstream sees the canonical path

"""The OpenAPI document, the /docs page, the response checker, and the API's pure helpers."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from gateway.api import docs
from gateway.api.auth import client_ip
from gateway.api.openapi import load_document, with_catalog
from gateway.api.schemas import iso, page_params
from gateway.errors import Invalid
from tests.conftest import make_settings
from tests.openapi_check import Gateway, check_response, start_gateway


@pytest.fixture
async def gw(aiohttp_client: Any, sqlite_url: str) -> Gateway:
    return await start_gateway(aiohttp_client, make_settings(sqlite_url))


async def test_openapi_json_serves_the_31_document(gw: Gateway) -> None:
    """/openapi.json is the OpenAPI 3.1 document, as JSON, with the loaded catalog's names."""
    reply = await gw.api.get("/openapi.json")
    assert reply.status == 200
    assert reply.json() == with_catalog(load_document(), gw.services.policy.catalog)
    assert reply.json()["openapi"].startswith("3.1")


async def test_openapi_lists_the_loaded_catalogs_permission_names(gw: Gateway) -> None:
    """The Permission schema enumerates the catalog; scopable names also as `name:resourceId`."""
    catalog = gw.services.policy.catalog
    served = (await gw.api.get("/openapi.json")).json()
    permission = served["components"]["schemas"]["Permission"]
    assert permission["anyOf"][0]["enum"] == sorted(catalog.permissions)
    items = served["components"]["schemas"]["GreenfieldCreateApiKeyRequest"]["properties"]
    assert items["permissions"]["items"] == {"$ref": "#/components/schemas/Permission"}
    validator = jsonschema.Draft202012Validator(
        {"$defs": {"P": permission}, "$ref": "#/$defs/P"},
        format_checker=jsonschema.FormatChecker(),
    )
    scopable = next(n for n, d in catalog.permissions.items() if d.scope is not None)
    assert validator.is_valid(scopable)
    assert validator.is_valid(f"{scopable}:S1")
    assert not validator.is_valid("nope.nothing")
    assert not validator.is_valid(f"{scopable}:")
    assert not validator.is_valid(scopable.replace(".", "x", 1) + ":S1")
    assert "Permission" in (await gw.api.get("/docs")).text


def _api_paths(gw: Gateway) -> set[str]:
    paths = set()
    for resource in gw.raw.app.router.resources():
        canonical = resource.canonical
        if canonical.startswith(("/api/v1/api-keys", "/api/v1/users", "/v1/")) or canonical in {
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/.well-known/jwks.json",
        }:
            paths.add(canonical)
    return paths


async def test_every_served_endpoint_is_documented_and_vice_versa(gw: Gateway) -> None:
    """The document lists exactly the gateway's own routes, with the methods they take."""
    document = load_document()
    served = _api_paths(gw)
    assert served == set(document["paths"])
    for resource in gw.raw.app.router.resources():
        if resource.canonical not in document["paths"]:
            continue
        methods = {route.method.lower() for route in resource} - {"*", "head"}
        documented = set(document["paths"][resource.canonical]) - {"parameters"}
        assert methods == documented, resource.canonical


async def test_docs_page_is_self_contained_html(gw: Gateway) -> None:
    """/docs renders every operation, loads nothing from elsewhere and runs no script."""
    reply = await gw.api.get("/docs")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    page = reply.text
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']https?://""", page)
    for path in load_document()["paths"]:
        assert f"<code>{path}</code>" in page


def test_docs_escape_document_text() -> None:
    """Text from the document is escaped on the page."""
    page = docs.render(
        {"info": {"title": "<b>x</b>", "description": "a & b"}, "paths": {}, "components": {}}
    )
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


async def test_operations_endpoints_conform(gw: Gateway) -> None:
    """/healthz, /readyz and /metrics answer as documented."""
    assert (await gw.api.get("/healthz")).status == 200
    assert (await gw.api.get("/readyz")).json()["checks"]["database"] == "ok"
    assert (await gw.api.get("/metrics")).status == 200


def test_checker_rejects_drift() -> None:
    """The response checker fails on an undocumented status, a wrong media type, an extra
    member where additionalProperties is false, and a 405 without Allow."""
    json_type = {"Content-Type": "application/json"}
    good = b'{"apiKey": "apk_abc***xyz", "label": "", "permissions": []}'
    check_response("GET", "/api/v1/api-keys/current", 200, json_type, good)
    with pytest.raises(AssertionError, match="not documented"):
        check_response("GET", "/api/v1/api-keys/current", 418, json_type, good)
    with pytest.raises(AssertionError, match="is not one of"):
        check_response("GET", "/api/v1/api-keys/current", 200, {"Content-Type": "text/html"}, good)
    extra = b'{"apiKey": "k", "label": "", "permissions": [], "id": 1}'
    with pytest.raises(AssertionError, match="does not match"):
        check_response("GET", "/api/v1/api-keys/current", 200, json_type, extra)
    with pytest.raises(AssertionError, match="must say which methods"):
        check_response("PUT", "/api/v1/api-keys/current", 405, json_type, b"{}")
    with pytest.raises(AssertionError, match="not in the OpenAPI document"):
        check_response("GET", "/elsewhere", 200, json_type, b"{}")


def test_client_ip_trusts_forwarded_for_only_from_trusted_proxies() -> None:
    """X-Forwarded-For counts only when the peer is a trusted proxy; then the nearest
    untrusted hop is the client."""
    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_ip("203.0.113.9", ["1.2.3.4"], proxies) == "203.0.113.9"
    assert client_ip("10.0.0.2", ["1.2.3.4, 198.51.100.7, 10.0.0.5"], proxies) == "198.51.100.7"
    assert client_ip("10.0.0.2", ["not-an-ip"], proxies) == "10.0.0.2"
    assert client_ip("10.0.0.2", [], proxies) == "10.0.0.2"
    assert client_ip(None, [], []) == "unknown"


def test_iso_and_paging_helpers() -> None:
    """Timestamps render as ISO 8601 UTC with Z; paging parameters are bounded."""
    plus2 = timezone(timedelta(hours=2))
    assert iso(datetime(2024, 5, 16, 12, 30, 0, 999, tzinfo=plus2)) == "2024-05-16T10:30:00Z"
    assert iso(datetime(2024, 5, 16, 10, 30, tzinfo=UTC)) == "2024-05-16T10:30:00Z"
    assert iso(None) is None
    assert page_params({}).size == 20
    with pytest.raises(Invalid):
        page_params({"page": "-1"})


async def test_operations_endpoints_refuse_other_methods_with_405(gw: Gateway) -> None:
    """POST to /healthz, /readyz or /metrics is a 405 problem naming GET, not a data-plane 404."""
    for path in ("/healthz", "/readyz", "/metrics"):
        reply = await gw.api.request("POST", path)
        assert reply.status == 405, path
        assert "GET" in reply.headers["Allow"]
        assert reply.headers["Content-Type"].startswith("application/problem+json")

"""Serving the OpenAPI document (`/openapi.json`) and its readable page (`/docs`).

The document is `openapi.yaml` beside this module, read when the application is built: a
broken document stops the start, not a request. What is served adds the loaded catalog's
permission names (`with_catalog`), so client generators and schemathesis know them; it is
rendered once per catalog.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from gateway.api import docs
from gateway.api.render import add_routes
from gateway.policy.model import Catalog
from gateway.state import SERVICES

DOCUMENT = "openapi.yaml"
# The page has no script at all; this keeps it so even if someone adds one by mistake.
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def load_document() -> dict[str, Any]:
    text = (resources.files("gateway.api") / DOCUMENT).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3.1"):
        raise ValueError(f"gateway/api/{DOCUMENT} is not an OpenAPI 3.1 document")
    return document


def with_catalog(document: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    """The document with `components.schemas.Permission` listing the catalog's names (and,
    for scopable ones, `name:resourceId`). Pure: the given document is not changed."""
    out = copy.deepcopy(dict(document))
    names = sorted(catalog.permissions)
    scopable = [n for n in names if catalog.permissions[n].scope is not None]
    choices: list[dict[str, Any]] = [{"type": "string", "enum": names}]
    if scopable:
        # Names are `[a-z0-9._:-]`; only the dot is special in a pattern.
        alternatives = "|".join(n.replace(".", "\\.") for n in scopable)
        choices.append(
            {"type": "string", "pattern": f"^(?:{alternatives}):[A-Za-z0-9._~-]{{1,128}}$"}
        )
    schemas = out.setdefault("components", {}).setdefault("schemas", {})
    schemas["Permission"] = {
        "description": (
            "A permission of the loaded catalog: its name, or `name:resourceId` for a "
            "permission that can be scoped to a resource."
        ),
        "anyOf": choices,
    }
    return out


def setup(app: web.Application) -> None:
    document = load_document()
    rendered: dict[int, tuple[Catalog, bytes, bytes]] = {}

    def render(request: web.Request) -> tuple[bytes, bytes]:
        catalog = request.app[SERVICES].policy.catalog
        cached = rendered.get(id(catalog))
        if cached is None or cached[0] is not catalog:
            full = with_catalog(document, catalog)
            body = json.dumps(full, ensure_ascii=False, indent=1).encode("utf-8")
            rendered.clear()
            cached = rendered[id(catalog)] = (catalog, body, docs.render(full).encode("utf-8"))
        return cached[1], cached[2]

    async def openapi_json(request: web.Request) -> web.Response:
        body, _ = render(request)
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    async def docs_page(request: web.Request) -> web.Response:
        _, page = render(request)
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"},
        )

    add_routes(app, "problem", "/openapi.json", {"GET": openapi_json})
    add_routes(app, "problem", "/docs", {"GET": docs_page})

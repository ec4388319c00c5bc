"""Serving the OpenAPI document (`/openapi.json`) and its readable page (`/docs`).

The document is `openapi.yaml` beside this module, read and rendered once when the
application is built: a broken document stops the start, not a request.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from gateway.api import docs
from gateway.api.render import add_routes

DOCUMENT = "openapi.yaml"
# The page has no script at all; this keeps it so even if someone adds one by mistake.
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def load_document() -> dict[str, Any]:
    text = (resources.files("gateway.api") / DOCUMENT).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3.1"):
        raise ValueError(f"gateway/api/{DOCUMENT} is not an OpenAPI 3.1 document")
    return document


def setup(app: web.Application) -> None:
    document = load_document()
    body = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    page = docs.render(document).encode("utf-8")

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    async def docs_page(request: web.Request) -> web.Response:
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"},
        )

    add_routes(app, "problem", "/openapi.json", {"GET": openapi_json})
    add_routes(app, "problem", "/docs", {"GET": docs_page})

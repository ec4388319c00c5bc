"""The gateway's own JSON APIs (Greenfield-compatible, /v1/apikeys, admin, OpenAPI)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the API routes (before the data plane's catch-all)."""

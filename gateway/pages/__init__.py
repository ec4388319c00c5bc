"""The pages people see: login, account API keys, the authorize consent flow."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register the page routes (before the data plane's catch-all)."""

"""The gateway's own JSON APIs (Greenfield-compatible, /v1/apikeys, admin, OpenAPI).

::

    greenfield.py   /api/v1/api-keys, /api/v1/users/{idOrEmail}/api-keys   {code, message}
    apikeys.py      /v1/apikeys (Buckaroo-style)                           problem+json
    admin.py        /v1/admin/users, /v1/admin/resources                   problem+json
    audit.py        /v1/admin/audit, /v1/apikeys/{id}/audit                problem+json
    secret_scanning.py  /v1/secret-scanning/github (GitHub's partner program)  problem+json
    openapi.py      /openapi.json, /docs (from openapi.yaml)
    auth.py         who is calling (key, Basic password, session) and shared checks
    body.py         JSON bodies within max_body_bytes
    schemas.py      pure: body validation and response shapes
    render.py       JSON responses and the per-surface error wrapper
    docs.py         pure: the OpenAPI document as an HTML page
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import admin, apikeys, audit, greenfield, openapi, secret_scanning


def setup(app: web.Application) -> None:
    """Register the API routes (before the data plane's catch-all)."""
    greenfield.setup(app)
    apikeys.setup(app)
    admin.setup(app)
    audit.setup(app)
    secret_scanning.setup(app)
    openapi.setup(app)

"""Operations endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway import metrics
from gateway.api.render import add_routes
from gateway.errors import NotFound
from gateway.reload import policy_status
from gateway.state import SERVICES, SETTINGS
from gateway.store.base import StoreError

READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """200 while the process serves requests."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 only while the database answers (Redis is optional: its loss degrades, not stops);
    with the active policy's hash and load time."""
    services = request.app[SERVICES]
    checks: dict[str, str] = {}
    ready = True
    try:
        await asyncio.wait_for(services.store.ping(), READY_TIMEOUT)
        checks["database"] = "ok"
    except (StoreError, TimeoutError, OSError):
        checks["database"] = "unavailable"
        ready = False
    if services.shared is not None:
        checks["redis"] = "ok" if await services.shared.ping() else "degraded"
    return web.json_response(
        {
            "status": "ready" if ready else "unavailable",
            "checks": checks,
            "policy": policy_status(services),
        },
        status=200 if ready else 503,
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text: every live worker's values, summed (metrics.py)."""
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def jwks(request: web.Request) -> web.Response:
    """The public key of the identity assertions (404 while assertions are off)."""
    from gateway.app import assertion_signer

    signer = assertion_signer(request.app[SETTINGS])
    if signer is None:
        raise NotFound("identity assertions are not enabled", code="assertions-off")
    return web.json_response(signer.jwks(), headers={"Cache-Control": "public, max-age=300"})


def setup(app: web.Application) -> None:
    # Other methods get a 405 problem, not the data plane's catch-all.
    add_routes(app, "problem", "/healthz", {"GET": healthz})
    add_routes(app, "problem", "/readyz", {"GET": readyz})
    add_routes(app, "problem", "/metrics", {"GET": metrics_endpoint})
    add_routes(app, "problem", "/.well-known/jwks.json", {"GET": jwks})

"""The admin listener (setting `admin_listen`): operations and administration apart from the
public port.

When it is set, each worker also listens on `admin_listen` (SO_REUSEPORT with several
workers, like the public port; metrics are summed across workers, so any worker's answer is
the whole instance's). There it serves `/metrics`, `/v1/admin/…`, `/docs`, `/openapi.json`,
`/healthz` and `/readyz`, and nothing else (404). The public listener no longer serves the
admin paths: a request for one is the data plane's like any other path, so it is 404 unless a
policy route takes it. `/healthz` and `/readyz` stay on both, for load-balancer probes.

One aiohttp application serves both listeners; the split is a middleware that looks at which
socket the request arrived on. The fast front never hands an admin path over (front_server).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.errors import NotFound
from gateway.proxy import handler as proxy
from gateway.proxy.render import problem_response
from gateway.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_EXACT = frozenset({"/metrics", "/docs", "/openapi.json", "/v1/admin"})
ADMIN_PREFIX = "/v1/admin/"
BOTH = frozenset({"/healthz", "/readyz"})
# The gateway's own paths, for `policy check`'s shadowing warning (pages and APIs: a policy
# route under one of these never sees a request while the gateway serves it itself).
OWN_EXACT = frozenset({*ADMIN_EXACT, *BOTH, "/.well-known/jwks.json"})


def is_admin_path(path: str) -> bool:
    return path in ADMIN_EXACT or path.startswith(ADMIN_PREFIX)


def split(settings: Settings) -> Middleware:
    """Admin paths only on the admin port; only admin paths (and probes) there."""
    admin_port = settings.admin_listen_port

    @web.middleware
    async def admin_split(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else ""
        on_admin = _local_port(request) == admin_port
        if is_admin_path(template):
            if not on_admin:
                return await proxy.handle(request)  # as if the gateway had no such page
        elif on_admin and template not in BOTH:
            return problem_response(
                NotFound("the admin listener serves operations and /v1/admin only")
            )
        return await handler(request)

    return admin_split


def _local_port(request: web.Request) -> int | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def bind(settings: Settings) -> socket.socket | None:
    """The admin listener's socket, or None when `admin_listen` is unset."""
    host, port = settings.admin_listen_host, settings.admin_listen_port
    if host is None or port is None:
        return None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.workers > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen on admin_listen {settings.admin_listen} ({exc.strerror})"
        ) from None
    sock.listen(128)
    return sock


async def start(runner: web.BaseRunner, settings: Settings) -> None:
    """Serve the runner's application on the admin listener too, when one is configured."""
    sock = bind(settings)
    if sock is not None:
        await web.SockSite(runner, sock).start()

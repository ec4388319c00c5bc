"""Running one worker with the fast front (`fast_data_plane`): the front owns the public
socket; the full aiohttp application listens on 127.0.0.1 for the connections the front hands
over. Both share one `Services` (and the application's Forwarder with its upstream pools)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import admin_listener, metrics
from gateway.app import create_app
from gateway.proxy import handler
from gateway.proxy.busy_poll import BusyPoll
from gateway.proxy.front import FrontProtocol
from gateway.proxy.front_context import ClientDeadlines, FrontContext, Sweeper
from gateway.proxy.h1.limits import Limits
from gateway.server_limits import ClientLimits, LimitedRunner
from gateway.services import open_services
from gateway.settings import Settings
from gateway.state import FORWARDER
from gateway.worker import serve_until_stopped

log = logging.getLogger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def gateway_surfaces(app: web.Application) -> tuple[frozenset[str], tuple[str, ...]]:
    """The paths (exact) and path prefixes the application serves itself, from its router,
    so the list cannot drift from the routes; the data-plane catch-all is left out.

    A dynamic route counts by its static prefix (`/api/v1/users/{id}/api-keys` →
    `/api/v1/users/`): handing over a little too much is only slower, never different.
    """
    exact: set[str] = set()
    prefixes: set[str] = set()
    for resource in app.router.resources():
        if any(route.handler is handler.handle for route in resource):
            continue
        info = resource.get_info()
        if "path" in info:
            exact.add(str(info["path"]))
        elif "formatter" in info:
            prefixes.add(str(info["formatter"]).split("{", 1)[0])
        elif "prefix" in info:
            prefixes.add(str(info["prefix"]))
    return frozenset(exact), tuple(sorted(prefixes))


def peer_middleware(peers: dict[int, str]) -> Middleware:
    """Give a handed-over request its real client address (aiohttp sees the front as peer)."""

    @web.middleware
    async def real_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        peername = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(peername, tuple) and peername[0] == "127.0.0.1":
            real = peers.get(peername[1])
            if real is not None:
                request = request.clone(remote=real)
        return await handler(request)

    return real_peer


async def serve_front(
    settings: Settings,
    sock: socket.socket,
    access_log: logging.Logger | None,
    shutdown: float,
    *,
    ready: Callable[[], None] | None = None,
    master: int | None = None,
) -> None:
    """Serve until SIGTERM (or the `master` process is gone); `ready()` is called once
    everything is set up. Then both servers drain, within `shutdown` seconds in all: the
    front first (its connections may be spliced to the aiohttp side, which must stay up for
    them), then the aiohttp side with what is left of the time."""
    async with open_services(settings) as services:
        app = create_app(settings, services=services)
        peers: dict[int, str] = {}
        app.middlewares.insert(0, peer_middleware(peers))
        # Handed-over connections are aiohttp's to time after the hand-over: idle keep-alive,
        # bodies and later heads.
        limits = ClientLimits.from_settings(settings)
        runner = LimitedRunner(app, limits, access_log=access_log, shutdown_timeout=shutdown)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            internal = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
            exact, prefixes = gateway_surfaces(app)
            if settings.admin_listen is not None:  # admin paths are the data plane's here
                exact = frozenset(p for p in exact if not admin_listener.is_admin_path(p))
                prefixes = tuple(p for p in prefixes if not admin_listener.is_admin_path(p))
            await admin_listener.start(runner, settings)
            ctx = FrontContext(
                services,
                app[FORWARDER],
                internal,
                exact,
                prefixes,
                peers,
                access_log,
                limits=Limits(max_header_count=settings.max_header_count),
                deadlines=ClientDeadlines(
                    settings.client_header_timeout,
                    settings.client_body_timeout,
                    settings.keepalive_timeout,
                ),
                max_connections=settings.max_connections,
            )
            metrics.watch_open_connections(lambda: ctx.open)
            loop = asyncio.get_running_loop()
            if settings.busy_poll_us:
                ctx.busy_poll = BusyPoll(loop, settings.busy_poll_us)
            sweeper = Sweeper(loop, ctx)
            # The backlog again: create_server listens anew on `sock`, by default with 100.
            server = await loop.create_server(
                lambda: FrontProtocol(ctx), sock=sock, backlog=settings.listen_backlog
            )
            if ready is not None:
                ready()
            await serve_until_stopped(services, master)
            deadline = loop.time() + shutdown
            server.close()
            await drain(ctx, shutdown)
            sweeper.stop()
            runner.shutdown_within(max(0.0, deadline - loop.time()))
        finally:
            await runner.cleanup()


async def drain(ctx: FrontContext, seconds: float) -> None:
    """A graceful stop, as aiohttp's `shutdown_timeout`: idle connections close at once,
    busy ones after their answer; whatever is still open after `seconds` is cut."""
    ctx.draining = True
    for protocol in list(ctx.connections):
        protocol.drain()
    if not ctx.connections:
        return
    try:
        async with asyncio.timeout(seconds):
            await ctx.drained.wait()
    except TimeoutError:
        log.warning("stopping with %d connection(s) still busy", len(ctx.connections))

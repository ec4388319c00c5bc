"""create_app(settings): wiring only, no logic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway import admin_listener, api, logs, metrics, observing, ops, pages, tracing
from gateway.assertion import AssertionSigner
from gateway.policy.model import Policy
from gateway.proxy import handler as proxy
from gateway.proxy.forward import Forwarder
from gateway.proxy.live import LiveExchanges
from gateway.server_limits import http11_only
from gateway.services import Services, open_services, run_background
from gateway.settings import Settings
from gateway.state import FORWARDER, SERVICES, SETTINGS

# Client bodies on the gateway's own endpoints are small JSON or forms; the data plane
# streams and is not limited by this.
CLIENT_MAX_SIZE = 1024 * 1024


def create_app(settings: Settings, services: Services | None = None) -> web.Application:
    """The gateway application. Pass `services` to share already-open ones (tests, CLI)."""
    logs.install()
    tracing.setup(settings)
    app = web.Application(client_max_size=CLIENT_MAX_SIZE, handler_args={"max_field_size": 16384})
    app[SETTINGS] = settings
    app.middlewares.append(observing.observer(settings.access_log, lambda: app.get(FORWARDER)))
    app.on_response_prepare.append(observing.add_request_id)
    if settings.admin_listen is not None:
        app.middlewares.append(admin_listener.split(settings))
    app.middlewares.append(http11_only)
    app.cleanup_ctx.append(_services_ctx(services))
    app.cleanup_ctx.append(_forwarder_ctx)
    app.cleanup_ctx.append(_metrics_ctx)
    ops.setup(app)
    api.setup(app)
    pages.setup(app)
    # The catch-all goes last: the gateway's own routes above always win.
    app.router.add_route("*", "/{tail:.*}", proxy.handle, expect_handler=proxy.defer_continue)
    return app


def assertion_signer(settings: Settings) -> AssertionSigner | None:
    """The identity-assertion signer, when the deployment turned assertions on."""
    if not settings.identity_assertion:
        return None
    return AssertionSigner(settings.secret, ttl=settings.identity_assertion_ttl)


def _services_ctx(given: Services | None):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[SERVICES] = given
            async with run_background(given):
                yield
            return
        async with open_services(app[SETTINGS]) as services:
            app[SERVICES] = services
            async with run_background(services):
                yield

    return ctx


def _follow_catalog(forwarder: Forwarder) -> Callable[[Policy], None]:
    return lambda policy: forwarder.use_catalog(policy.catalog)


async def _forwarder_ctx(app: web.Application) -> AsyncIterator[None]:
    # Runs after _services_ctx (cleanup contexts start in order), so the policy is loaded.
    settings = app[SETTINGS]
    forwarder = Forwarder(
        app[SERVICES].policy.catalog,
        settings.trusted_proxies,
        assertion_signer(settings),
        settings.strip_request_headers,
    )
    await forwarder.start()
    forwarder.live = LiveExchanges(app[SERVICES])
    app[FORWARDER] = forwarder
    watchers = app[SERVICES].policy_watchers
    follow = _follow_catalog(forwarder)
    watchers.append(follow)
    yield
    watchers.remove(follow)
    await forwarder.close()


async def _metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Gauges sampled from live state: at each scrape, and every second while several
    workers share the metrics (another worker's scrape reads what was sampled here)."""
    services, forwarder = app[SERVICES], app[FORWARDER]

    def sample() -> None:
        metrics.KEY_CACHE_ENTRIES.set(services.verifier.cache_size)
        metrics.KEY_BUDGET_ADDRESSES.set(len(services.key_budget))
        for name, busy, idle in forwarder.client.pool_use():
            metrics.UPSTREAM_CONNECTIONS.labels(name, "busy").set(busy)
            metrics.UPSTREAM_CONNECTIONS.labels(name, "idle").set(idle)

    forget = metrics.sampled(sample)
    task = asyncio.create_task(_sample_often()) if metrics.MULTIPROCESS else None
    yield
    forget()
    metrics.flush()  # a worker stopping gracefully leaves no count unwritten
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sample_often() -> None:
    while True:
        await asyncio.sleep(metrics.SAMPLE_SECONDS)
        metrics.sample()

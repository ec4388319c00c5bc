"""The aiohttp server's request observer: request ids, metrics, the access log and spans.

One middleware, outermost after the real-peer fix of a handed-over connection, times every
request the aiohttp application answers (its own pages and APIs, and the data plane when
`fast_data_plane` is off or a connection was handed over). The data-plane handler fills in
the decision (`access.Exchange`); a gateway page is labelled with its route template.

aiohttp's own access logger is not used (`server_limits.LimitedRunner` turns it off): this
middleware writes the gateway's richer line to the same `aiohttp.access` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import logs, metrics, tracing
from gateway.access import EXCHANGE, IDS, REQUEST_ID, Access, Exchange, log_access
from gateway.proxy.forward import Forwarder

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCESS_LOGGER = "aiohttp.access"


def _template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else metrics.UNMATCHED


def observer(access_log: bool, forwarder: Callable[[], Forwarder | None]) -> Middleware:
    """The middleware; `forwarder()` gives the application's (it knows the trusted proxies)."""
    logs.set_access_log(access_log)  # a settings reload may turn it on or off later
    logger = logging.getLogger(ACCESS_LOGGER)

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = perf_counter()
        fwd = forwarder()
        trusted = fwd is not None and fwd.trusts(request.remote)
        rid = IDS.take(request.headers.getall(REQUEST_ID, ()), trusted)
        exchange = request[EXCHANGE] = Exchange(rid, started)
        status, size = 500, 0
        with tracing.server_span(request.method, request.headers, rid) as span:
            if span is not tracing.NO_SPAN:
                exchange.span = span
            try:
                response = await handler(request)
                status = response.status
                if response.prepared:  # streamed by the handler: written already
                    size = response.body_length
                else:
                    response.headers[REQUEST_ID] = rid
                    body = getattr(response, "body", None)
                    size = len(body) if isinstance(body, bytes) else 0
                return response
            except web.HTTPException as exc:
                status = exc.status
                exc.headers[REQUEST_ID] = rid
                raise
            finally:
                route = exchange.route or _template(request)
                outcome = exchange.outcome or ("ok" if status < 400 else "error")
                span.finish(route, status, outcome)
                _record(request, exchange, route, status, outcome, size, logger)

    return observe


def _record(
    request: web.Request,
    exchange: Exchange,
    route: str,
    status: int,
    outcome: str,
    size: int,
    logger: logging.Logger,
) -> None:
    total = perf_counter() - exchange.started
    metrics.request_done(route, request.method, status, outcome, total)
    if not logs.access_enabled(logger):
        return
    log_access(
        logger,
        Access(
            exchange.request_id,
            request.remote,
            request.method,
            request.raw_path,
            route,
            status,
            outcome,
            exchange.key_id,
            exchange.user_id,
            exchange.upstream_status,
            size,
            total,
            exchange.upstream,
            exchange.auth,
            request.headers.get("Referer"),
            request.headers.get("User-Agent"),
        ),
    )


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: a response the handler streams itself gets the id too."""
    exchange = request.get(EXCHANGE)
    if exchange is not None and REQUEST_ID not in response.headers:
        response.headers[REQUEST_ID] = exchange.request_id

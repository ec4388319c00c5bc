"""Forwarding an allowed request to its upstream, streaming in both directions.

Interface used by the handler: `Forwarder.forward(request, target, upstream, route, principal)`.
Headers are rewritten by the pure `headers` module, bytes move through the lean `client`, and
WebSocket routes go to `websocket`. Failures before the response head reaches the client are
problem+json (502/504); after that the client connection is closed, so a truncated body is
visible as truncated rather than passed off as complete.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import aiohttp
from aiohttp import web

from gateway import metrics, tracing
from gateway.access import EXCHANGE, Exchange
from gateway.assertion import AssertionSigner
from gateway.errors import upstream_error
from gateway.policy.evaluate import Principal
from gateway.policy.model import Catalog, Route, Upstream
from gateway.policy.paths import CanonicalTarget
from gateway.proxy import websocket
from gateway.proxy.client import UpstreamClient
from gateway.proxy.headers import (
    Header,
    Identity,
    Origin,
    request_drop,
    request_headers,
    response_fields,
)
from gateway.proxy.live import LiveExchange, LiveExchanges
from gateway.proxy.render import problem_response
from gateway.proxy.response import Response
from gateway.proxy.upstream_http import UpstreamError, decode_fields
from gateway.records import maker

log: Final = logging.getLogger("gateway.proxy")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_EMPTY: Final[tuple[Network, ...]] = ()
IDENTITY_CACHE_SIZE: Final = 10_000  # principals whose identity headers are kept ready
# Built per request: `Origin(...)` without its Python-level __new__ (records.py).
_origin: Final = maker(Origin)


class Forwarder:
    """Forwards allowed requests; one per application, holding the upstream pools.

    The fast front (front.py) shares it: `client` (one set of upstream connections per
    worker, whichever server took the request) and `upstream_headers`.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        trusted_proxies: Sequence[Network] = _EMPTY,
        signer: AssertionSigner | None = None,
        strip_request_headers: Iterable[str] = (),
    ) -> None:
        self._catalog = catalog
        # Request headers dropped by name (setting `strip_request_headers` included), merged
        # once here; the fast front uses the same set.
        # A client's X-Request-Id is replaced by the gateway's (gateway/access.py), and so is
        # its trace context while the gateway traces (gateway/tracing.py).
        own = ("x-request-id", *(tracing.TRACE_HEADERS if tracing.ENABLED else ()))
        self.request_drop = request_drop((*strip_request_headers, *own))
        self._trusted = tuple(trusted_proxies)
        self._signer = signer
        self.client = UpstreamClient()
        self._ws_session: aiohttp.ClientSession | None = None
        # Exchanges that outlive one read, followed by their key (set by the wiring).
        self.live: LiveExchanges | None = None
        # principal (and upstream, with assertions) -> (identity, time after which the
        # identity is rebuilt). A principal hashes by identity: one lookup, no key built.
        self._identities: dict[Principal | tuple[Principal, str], tuple[Identity, float]] = {}

    def use_catalog(self, catalog: Catalog) -> None:
        """Compute identity permissions against `catalog` from now on (policy reloaded)."""
        self._catalog = catalog
        self._identities.clear()

    async def start(self) -> None:
        # WebSocket upgrades are rare and long-lived: aiohttp's client does them well.
        self._ws_session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )

    async def close(self) -> None:
        await self.client.close()
        if self._ws_session is not None:
            await self._ws_session.close()

    async def forward(
        self,
        request: web.Request,
        target: CanonicalTarget,
        upstream: Upstream,
        route: Route,
        principal: Principal | None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> web.StreamResponse:
        """Forward an allowed request; `extra` fields (rate-limit state) join the answer."""
        headers = self.upstream_headers(
            request.headers.items(),
            request.remote,
            request.scheme,
            request.headers.get("Host"),
            principal,
            upstream,
        )
        exchange = request.get(EXCHANGE)
        if exchange is not None:
            headers.extend(exchange.upstream_headers())
        path = target.path + "?" + target.query if target.query else target.path
        if route.websocket and websocket.is_upgrade(request):
            assert self._ws_session is not None
            try:
                return await websocket.proxy(
                    request, self._ws_session, upstream, path, headers, self._watcher(principal)
                )
            except UpstreamError as exc:
                return _failure(exc, upstream, target)
        body = request.content if request.body_exists else None
        live = None
        if body is not None and not body.is_eof() and self.live is not None:
            # An upload still arriving: its key is followed while it is forwarded.
            live = self.live.watch(
                request.method,
                request.raw_path,
                _values(request),
                principal,
                _abort(request),
                request.remote,
            )
        try:
            sent = time.perf_counter()
            try:
                response = await self.client.request(
                    upstream, request.method, path, headers, body, request.content_length
                )
            except UpstreamError as exc:
                _heard(exchange, upstream, sent, None)
                return _failure(exc, upstream, target)
            _heard(exchange, upstream, sent, response.status)
            out_headers = decode_fields(response_fields(response.fields))
            if extra:
                out_headers += extra
            reason = response.reason or None
            if response.complete:
                # The whole body came with the head (the common small answer): one write to
                # the client instead of prepare + write + write_eof.
                data = response.take_body()
                response.release()
                return web.Response(
                    status=response.status, reason=reason, headers=out_headers, body=data or None
                )
            cut = _cut_stream(request, response)
            if live is not None:
                live.cut = cut  # the upload is sent: cutting now also closes the upstream
            elif self.live is not None:
                live = self.live.watch(
                    request.method,
                    request.raw_path,
                    _values(request),
                    principal,
                    cut,
                    request.remote,
                )
            return await _stream(request, response, out_headers, reason, upstream)
        finally:
            if live is not None and self.live is not None:
                self.live.unwatch(live)

    def _watcher(self, principal: Principal | None) -> websocket.Follow | None:
        """How a WebSocket registers itself once both sides are upgraded."""
        registry = self.live
        if registry is None or principal is None:
            return None

        def follow(request: web.Request, cut: Callable[[], None]) -> LiveExchange | None:
            return registry.watch(
                request.method, request.raw_path, _values(request), principal, cut, request.remote
            )

        return websocket.Follow(follow, registry.unwatch)

    def trusts(self, peer: str | None) -> bool:
        """Whether `peer` is a trusted proxy (its forwarding headers and request id count)."""
        return bool(self._trusted) and peer is not None and _within(peer, self._trusted)

    def upstream_headers(
        self,
        headers: Iterable[Header],
        peer: str | None,
        scheme: str,
        host: str | None,
        principal: Principal | None,
        upstream: Upstream,
    ) -> list[Header]:
        """The headers to send `upstream` for a client's request from `peer`: the client's
        own rewritten (forwarding headers trusted only from `trusted_proxies`) and the
        principal's identity added."""
        trusted = bool(self._trusted) and peer is not None and _within(peer, self._trusted)
        return request_headers(
            headers,
            _origin((peer, scheme, host, trusted)),
            self._identity(principal, upstream),
            self.request_drop,
        )

    def _identity(self, principal: Principal | None, upstream: Upstream) -> Identity | None:
        if principal is None:
            return None
        # The verifier hands out the same Principal object for as long as it caches a key, so
        # the effective permissions are computed once per cached key, not per request; a
        # re-verified (possibly changed) key is another object and computes afresh. With
        # assertions, each upstream gets its own (its name is the audience).
        signer = self._signer
        slot: Principal | tuple[Principal, str] = (
            principal if signer is None else (principal, upstream.name)
        )
        cached = self._identities.get(slot)
        if cached is not None and (signer is None or time.time() < cached[1]):
            return cached[0]
        if self._catalog is None:  # no catalog, no way to compute effective permissions
            permissions: tuple[str, ...] = ()
        else:
            permissions = tuple(str(p) for p in principal.effective(self._catalog))
        refresh = float("inf")
        assertion = None
        if self._signer is not None:
            # Signing costs tens of microseconds: sign once, reuse for half the lifetime.
            assertion, expires = self._signer.sign(
                principal.authority.user_id, principal.key_id, permissions, upstream.name
            )
            refresh = expires - self._signer.ttl / 2
        identity = Identity(principal.authority.user_id, principal.key_id, permissions, assertion)
        if len(self._identities) >= IDENTITY_CACHE_SIZE:
            self._identities.clear()
        self._identities[slot] = (identity, refresh)
        return identity


async def _stream(
    request: web.Request,
    upstream_response: Response,
    headers: list[tuple[str, str]],
    reason: str | None,
    upstream: Upstream,
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream_response.status, reason=reason, headers=headers)
    try:
        await response.prepare(request)
        while chunk := await upstream_response.read():
            await response.write(chunk)
        await response.write_eof()
    except UpstreamError as exc:
        # The head is out: the only honest signal left is to cut the client connection.
        log.warning("upstream %s failed mid-response: %s", upstream.name, exc)
        upstream_response.close()
        request.protocol.force_close()
        return response
    except ConnectionError:
        upstream_response.close()  # the client went away; the rest of the body is unwanted
        return response
    except BaseException:
        upstream_response.close()
        raise
    upstream_response.release()
    return response


def _heard(exchange: Exchange | None, upstream: Upstream, sent: float, status: int | None) -> None:
    """The upstream answered with `status` (None: it failed), for metrics and the log."""
    seconds = time.perf_counter() - sent
    metrics.upstream_answered(upstream.name, seconds)
    if exchange is not None:
        exchange.upstream = seconds
        exchange.upstream_status = status
        if status is None:
            exchange.outcome = "upstream-failed"


def _values(request: web.Request) -> Callable[[str], Sequence[str]]:
    headers = request.headers

    def values(name: str) -> Sequence[str]:
        return headers.getall(name, ())

    return values


def _abort(request: web.Request) -> Callable[[], None]:
    """Cut an upload: the client's connection goes, so its body fails on the way upstream and
    the upstream connection is closed with it."""

    def cut() -> None:
        if request.transport is not None:
            request.transport.abort()

    return cut


def _cut_stream(request: web.Request, response: Response) -> Callable[[], None]:
    """Cut a streamed response: the head is out, so the client connection is cut (a body
    ending early is visible as truncated), and the upstream connection is closed."""

    def cut() -> None:
        if request.transport is not None:
            request.transport.abort()
        response.close()

    return cut


def _failure(exc: UpstreamError, upstream: Upstream, target: CanonicalTarget) -> web.Response:
    log.warning("upstream %s: %s", upstream.name, exc)
    return problem_response(upstream_error(exc), target.path)


def _within(peer: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)

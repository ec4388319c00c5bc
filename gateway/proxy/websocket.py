"""WebSocket proxying, only on routes whose policy says `websocket: true`.

The upstream handshake happens first, with the same rewritten headers as any forwarded request
(identity and X-Forwarded-*, no credential): if the upstream refuses or cannot be reached, the
client gets a plain 502/504 and is never upgraded. Then the client side is upgraded with the
subprotocol the upstream chose, and messages are pumped both ways until either side closes;
its close code is passed on to the other. Pings are answered on each hop (autoping).

While both sides are open the exchange follows its key (`live.py`): if a re-check finds the
request no longer allowed, the client side is closed with 1008 (policy violation) and the
upstream side with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import aiohttp
from aiohttp import web
from yarl import URL

from gateway.policy.model import Upstream
from gateway.proxy.headers import Header
from gateway.proxy.upstream_http import (
    ClientRequestError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

if TYPE_CHECKING:
    from gateway.proxy.live import LiveExchange

# aiohttp writes its own handshake headers on the upstream side; the client's would clash.
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Codes that must not be sent in a close frame (RFC 6455 §7.4.1): replaced when relayed.
_RESERVED_CODES = frozenset({1005, 1006, 1015})
GOING_AWAY = 1001
POLICY_VIOLATION = 1008


class Follow(NamedTuple):
    """How an upgraded exchange registers to follow its key, and unregisters."""

    watch: Callable[[web.Request, Callable[[], None]], LiveExchange | None]
    unwatch: Callable[[LiveExchange | None], None]


def is_upgrade(request: web.Request) -> bool:
    """A WebSocket upgrade request (GET with `Upgrade: websocket`)."""
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


async def proxy(
    request: web.Request,
    session: aiohttp.ClientSession,
    upstream: Upstream,
    target: str,
    headers: list[Header],
    follow: Follow | None = None,
) -> web.StreamResponse:
    """Upgrade both sides and relay messages; raises UpstreamError before any upgrade."""
    client = web.WebSocketResponse(autoping=True)
    ready = client.can_prepare(request)
    if not ready.ok:
        raise ClientRequestError("the WebSocket handshake from the client is malformed")
    offered = [
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    ]
    outgoing = [(n, v) for n, v in headers if n.lower() not in _HANDSHAKE]
    try:
        async with asyncio.timeout(upstream.connect_timeout + upstream.read_timeout):
            remote = await session.ws_connect(
                URL(upstream.url + target, encoded=True),
                headers=outgoing,
                protocols=offered,
                autoping=True,
            )
    except TimeoutError:
        raise UpstreamTimeout("the upstream did not accept the WebSocket in time") from None
    except aiohttp.WSServerHandshakeError as exc:
        raise UpstreamProtocolError(
            f"the upstream refused the WebSocket upgrade (status {exc.status})"
        ) from None
    except aiohttp.ClientError:
        raise UpstreamUnreachable("the upstream could not be reached") from None
    try:
        client = web.WebSocketResponse(
            autoping=True, protocols=(remote.protocol,) if remote.protocol else ()
        )
        await client.prepare(request)
        revoked = asyncio.get_running_loop().create_future()
        live = None if follow is None else follow.watch(request, _resolver(revoked))
        try:
            await _relay(client, remote, revoked)
        finally:
            if follow is not None:
                follow.unwatch(live)
    finally:
        # Also reached when aiohttp cancels this handler because the client's connection is
        # gone: the upstream still learns the client's close code.
        if not remote.closed:
            await remote.close(code=_relayable(client.close_code))
    return client


async def _relay(
    client: web.WebSocketResponse,
    remote: aiohttp.ClientWebSocketResponse,
    revoked: asyncio.Future[None],
) -> None:
    to_remote = asyncio.ensure_future(_pump(client, remote))
    to_client = asyncio.ensure_future(_pump(remote, client))
    try:
        done, _ = await asyncio.wait(
            (to_remote, to_client, revoked), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (to_remote, to_client):
            task.cancel()
        for task in (to_remote, to_client):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if revoked in done:  # the key no longer allows this exchange
        message = b"the API key no longer allows this connection"
        await client.close(code=POLICY_VIOLATION, message=message)
        await remote.close(code=POLICY_VIOLATION)
    # Whichever side closed first decides the code the other side sees.
    elif to_remote in done:
        await remote.close(code=_relayable(client.close_code))
        await client.close(code=_relayable(client.close_code))
    else:
        await client.close(code=_relayable(remote.close_code))


def _resolver(future: asyncio.Future[None]) -> Callable[[], None]:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    return resolve


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type == aiohttp.WSMsgType.ERROR:
            return


def _relayable(code: int | None) -> int:
    if code is None or code in _RESERVED_CODES:
        return GOING_AWAY
    return code

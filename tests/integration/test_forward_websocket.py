"""WebSocket proxying on `websocket: true` routes, against a real aiohttp WebSocket upstream."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.integration.gateways import MakeGateway
from tests.integration.upstream import EchoUpstream


class Closes(list[int | None]):
    """Close codes the upstream saw; `done` is set at each."""

    def __init__(self) -> None:
        super().__init__()
        self.done = asyncio.Event()


def _ws_upstream() -> tuple[EchoUpstream, Closes]:
    """An upstream echoing WebSocket messages; it records the close codes it receives."""
    upstream = EchoUpstream()
    closes = Closes()

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("chat.v2", "chat.v1"))
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                if message.data == "close-me":
                    await ws.close(code=4001, message=b"bye")
                    break
                await ws.send_str(f"echo:{message.data}")
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        closes.append(ws.close_code)
        closes.done.set()
        return ws

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="no sockets for you")

    upstream.route("GET", "/ws/echo", echo)
    upstream.route("GET", "/ws/refused", refuse)
    return upstream, closes


async def test_websocket_messages_flow_both_ways(make_gateway: MakeGateway) -> None:
    """Text and binary messages are relayed both ways and the upstream's subprotocol is used."""
    upstream, _ = _ws_upstream()
    gw = await make_gateway(upstream)
    async with gw.client.ws_connect("/ws/echo", headers=gw.auth, protocols=("chat.v1",)) as ws:
        assert ws.protocol == "chat.v1"
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "echo:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert await ws.receive_bytes(timeout=5) == b"\x03\x02\x01"


async def test_websocket_handshake_carries_identity_not_the_key(make_gateway: MakeGateway) -> None:
    """The upstream handshake has the identity headers, and neither the key nor spoofed ones."""
    upstream, _ = _ws_upstream()
    gw = await make_gateway(upstream)
    headers = {**gw.auth, "X-Gateway-User": "admin"}
    async with gw.client.ws_connect("/ws/echo", headers=headers) as ws:
        await ws.send_str("ping")
        await ws.receive_str(timeout=5)
    seen = upstream.received[-1]
    assert seen.header("X-Gateway-User") == [gw.user_id]
    assert seen.header("X-Gateway-Key-Id") == [gw.key_id]
    assert seen.header("X-API-KEY") == []
    assert not any(gw.key in v for _, v in seen.headers)


async def test_close_codes_are_relayed_from_the_client(make_gateway: MakeGateway) -> None:
    """A client's close code reaches the upstream."""
    upstream, closes = _ws_upstream()
    gw = await make_gateway(upstream)
    async with gw.client.ws_connect("/ws/echo", headers=gw.auth) as ws:
        await ws.send_str("one")
        await ws.receive_str(timeout=5)
        await ws.close(code=4000)
    async with asyncio.timeout(5):
        await closes.done.wait()
    assert closes == [4000]


async def test_close_codes_are_relayed_from_the_upstream(make_gateway: MakeGateway) -> None:
    """An upstream's close code reaches the client."""
    upstream, _ = _ws_upstream()
    gw = await make_gateway(upstream)
    async with gw.client.ws_connect("/ws/echo", headers=gw.auth) as ws:
        await ws.send_str("close-me")
        message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4001


async def test_websocket_without_key_is_refused_before_the_upstream(
    make_gateway: MakeGateway,
) -> None:
    """An upgrade without a key is a 401 and never reaches the upstream."""
    upstream, _ = _ws_upstream()
    gw = await make_gateway(upstream)
    async with gw.client.get(
        "/ws/echo",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    ) as response:
        assert response.status == 401
    assert upstream.received == []


async def test_upstream_refusing_the_upgrade_is_a_502(make_gateway: MakeGateway) -> None:
    """If the upstream will not upgrade, the client gets 502 problem+json and is not upgraded."""
    upstream, _ = _ws_upstream()
    gw = await make_gateway(upstream)
    async with gw.client.get(
        "/ws/refused",
        headers={
            **gw.auth,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    ) as response:
        assert response.status == 502
        assert response.content_type == "application/problem+json"

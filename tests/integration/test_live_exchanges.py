"""Open WebSockets and streamed responses follow their key: a change that refuses the key
(revoked, disabled, owner disabled) closes them; one that leaves the request allowed does not.

The changes are made through the store path every surface uses (`KeyService`, `UserService`):
in-process on aiohttp, and from this process on the front's SQLite database, which the
`gateway serve` process learns from its invalidation log. Bounds are generous deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gateway.services import Services, open_services
from gateway.settings import load_settings
from gateway.state import FORWARDER, SERVICES
from tests.integration.gateways import Gateway, MakeGateway, _create_reader, write_policy
from tests.integration.test_auth_support import free_port, wait_until
from tests.integration.test_multi_instance import _ready, _subscribed, gateway_process
from tests.integration.upstream import EchoUpstream

BOUND = 10.0  # seconds: far above one poll interval (1 s) plus a request
POLICY_VIOLATION = 1008


@contextlib.asynccontextmanager
async def control(gw: Gateway) -> AsyncIterator[Services]:
    """The services that change keys and users in the gateway's own database."""
    if gw.process is None:
        app = gw.client.app  # type: ignore[union-attr]  # a TestClient on aiohttp
        yield app[SERVICES]
        return
    assert gw.env is not None
    async with open_services(load_settings(environ=gw.env), migrate=False) as services:
        yield services


async def revoke(gw: Gateway) -> None:
    async with control(gw) as services:
        key = await services.keys.get_owned(gw.key_id, None)
        await services.keys.revoke(key, actor=None)


class Seen:
    """What the upstream saw of its WebSockets and streams."""

    def __init__(self) -> None:
        self.ws_closes: list[int | None] = []
        self.ws_closed = asyncio.Event()
        self.stream_cut = asyncio.Event()


def live_upstream() -> tuple[EchoUpstream, Seen]:
    """An echoing WebSocket at /ws/echo and a slow endless stream at /api/slow."""
    upstream = EchoUpstream()
    seen = Seen()

    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo:{message.data}")
        seen.ws_closes.append(ws.close_code)
        seen.ws_closed.set()
        return ws

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(600):  # a minute at most
                await response.write(b"x" * 1024)
                await asyncio.sleep(0.1)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            seen.stream_cut.set()
            raise
        return response

    upstream.route("GET", "/ws/echo", echo)
    upstream.route("GET", "/api/slow", slow)
    return upstream, seen


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the gateway closes the WebSocket (at most BOUND); its close code."""
    async with asyncio.timeout(BOUND):
        async for _ in ws:
            pass
    return ws.close_code


async def test_a_revoked_keys_websocket_is_closed_with_1008(make_gateway: MakeGateway) -> None:
    """Revoking a key closes its open WebSocket: 1008 to the client, closed upstream."""
    upstream, seen = live_upstream()
    gw = await make_gateway(upstream)
    async with gw.client.ws_connect("/ws/echo", headers=gw.auth) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "echo:hi"
        await revoke(gw)
        assert await closed_with(ws) == POLICY_VIOLATION
    async with asyncio.timeout(BOUND):
        await seen.ws_closed.wait()
    assert seen.ws_closes == [POLICY_VIOLATION]


async def test_a_disabled_owners_websocket_is_closed_with_1008(make_gateway: MakeGateway) -> None:
    """Disabling the key's owner closes the key's open WebSocket with 1008."""
    upstream, _ = live_upstream()
    gw = await make_gateway(upstream)
    async with gw.client.ws_connect("/ws/echo", headers=gw.auth) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "echo:hi"
        async with control(gw) as services:
            owner = await services.users.find(gw.user_id)
            await services.users.set_disabled(owner, True, actor="test")
        assert await closed_with(ws) == POLICY_VIOLATION


async def test_removing_an_unrelated_grant_leaves_the_websocket_open(
    make_gateway: MakeGateway,
) -> None:
    """A grant the WebSocket's route does not need is removed: the change is seen (the other
    route is refused) and the WebSocket stays open."""
    upstream, seen = live_upstream()
    gw = await make_gateway(upstream, permissions=("t.read", "t.admin"))
    async with gw.client.ws_connect("/ws/echo", headers=gw.auth) as ws:
        await ws.send_str("before")
        assert await ws.receive_str(timeout=5) == "echo:before"
        async with gw.client.get("/admin/x", headers=gw.auth) as response:
            assert response.status == 200
        async with control(gw) as services:
            owner = await services.users.find(gw.user_id)
            await services.users.revoke_grants(owner, ["t.admin"], actor="test")
        deadline = time.monotonic() + BOUND
        while True:
            async with gw.client.get("/admin/x", headers=gw.auth) as response:
                if response.status == 403:
                    break
            assert time.monotonic() < deadline, "the grant's removal never reached the gateway"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # room for the re-check the invalidation started
        await ws.send_str("after")
        assert await ws.receive_str(timeout=5) == "echo:after"
        assert not ws.closed
    assert seen.ws_closes != [POLICY_VIOLATION]


async def test_a_revoked_keys_streamed_response_is_cut(make_gateway: MakeGateway) -> None:
    """Revoking a key cuts its streamed response short: the client's body ends in an error
    long before the upstream would have finished, and the upstream connection is closed."""
    upstream, seen = live_upstream()
    gw = await make_gateway(upstream)
    received = 0
    started = time.monotonic()
    async with gw.client.get(
        "/api/slow", headers=gw.auth, timeout=aiohttp.ClientTimeout(60)
    ) as response:
        assert response.status == 200
        received += len(await response.content.readany())
        await revoke(gw)
        try:
            async with asyncio.timeout(BOUND):
                while piece := await response.content.readany():
                    received += len(piece)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            pass
        else:
            raise AssertionError("the stream ended as if complete")
    assert time.monotonic() - started < BOUND + 5
    assert received < 600 * 1024
    async with asyncio.timeout(BOUND):
        await seen.stream_cut.wait()


async def test_a_key_revoked_through_instance_a_closes_its_websocket_on_instance_b(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Two `gateway serve` instances on PostgreSQL and Redis: a key revoking itself through
    A's API closes its WebSocket open on B with 1008, by the Redis notice (the invalidation log
    is read only every 30 s here)."""
    namespace = f"kgtest{uuid.uuid4().hex[:10]}"
    upstream, _ = live_upstream()
    async with upstream, aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            {
                "GATEWAY_MODE": "production",
                "GATEWAY_SECRET": secrets.token_hex(32),
                "GATEWAY_DATABASE_URL": pg_url,
                "GATEWAY_REDIS_URL": redis_url,
                "GATEWAY_REDIS_NAMESPACE": namespace,
                "GATEWAY_POLICY": str(write_policy(tmp_path, upstream, None, None)),
                "GATEWAY_DATA_DIR": str(tmp_path / "var"),
                "GATEWAY_INVALIDATION_POLL_INTERVAL": "30",
                "GATEWAY_LOCAL_CACHE_TTL": "600",
                "GATEWAY_LOG_LEVEL": "WARNING",
            }
        )
        ports = free_port(), free_port()
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        for port, url, name in zip(ports, (a, b), ("a", "b"), strict=True):
            proc = stack.enter_context(gateway_process(env, port, tmp_path / f"{name}.log"))
            ready = await wait_until(lambda u=url, p=proc: _ready(session, u, p), seconds=60)
            assert ready, (tmp_path / f"{name}.log").read_text()
        redis = aioredis.Redis.from_url(redis_url)
        try:
            assert await wait_until(lambda: _subscribed(redis, f"{namespace}:invalidate"))
        finally:
            await redis.aclose()
        async with open_services(load_settings(environ=env), migrate=False) as services:
            key, _, _ = await _create_reader(services, ["t.read"])
        auth = {"X-API-KEY": key}
        async with session.ws_connect(b + "/ws/echo", headers=auth) as ws:
            await ws.send_str("hi")
            assert await ws.receive_str(timeout=5) == "echo:hi"
            async with session.delete(
                a + "/api/v1/api-keys/current", headers={"Authorization": f"token {key}"}
            ) as response:
                assert response.status == 200, await response.text()
            assert await closed_with(ws) == POLICY_VIOLATION


@pytest.mark.server("aiohttp", reason="reads the registry of the gateway in this process")
async def test_ended_exchanges_leave_the_registry(make_gateway: MakeGateway) -> None:
    """A WebSocket and a streamed response are registered while they run and not after."""
    upstream, _ = live_upstream()
    gw = await make_gateway(upstream)
    live = gw.client.app[FORWARDER].live  # type: ignore[union-attr]  # a TestClient here
    assert live is not None
    async with gw.client.ws_connect("/ws/echo", headers=gw.auth) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "echo:hi"
        assert len(live) == 1
    async with gw.client.get("/api/slow", headers=gw.auth) as response:
        await response.content.readany()
        assert len(live) == 1

    async def empty() -> bool:
        return len(live) == 0

    assert await wait_until(empty, seconds=BOUND)

"""One keyed hash per request on the data plane: a key missing from the in-process cache is
hashed once, however many steps (memory, Redis, database) its decision takes. Counted through a
real verifier whose hashing function counts, on both servers (the aiohttp handler and the fast
front), against real Redis, a real SQLite store and a real upstream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.keys import format as keyformat
from gateway.keys.hashing import KeyHasher
from gateway.keys.verify import KeyVerifier
from gateway.proxy.front import FrontProtocol
from gateway.proxy.front_context import FrontContext
from gateway.proxy.front_server import gateway_surfaces
from gateway.services import Services, open_services
from gateway.state import FORWARDER
from tests.conftest import make_settings
from tests.integration.gateways import write_policy
from tests.integration.upstream import EchoUpstream


class CountingHasher(KeyHasher):
    """The deployment's HMAC-SHA256, counting every key it hashes."""

    __slots__ = ("count",)

    def __init__(self, pepper: bytes) -> None:
        super().__init__(pepper)
        self.count = 0

    def digest(self, key_text: str) -> bytes:
        self.count += 1
        return super().digest(key_text)


@dataclasses.dataclass
class Servers:
    services: Services
    hasher: CountingHasher
    aiohttp_url: str
    front_url: str

    async def new_key(self) -> str:
        user = await self.services.users.create(
            email=f"{keyformat.generate().key_id.lower()}@example.com",
            password=None,
            actor="test",
            is_service=True,
            grants=["t.read"],
        )
        new = await self.services.keys.create(
            owner=user, creator=None, label="reader", permissions=["t.read"]
        )
        return new.text


@pytest.fixture
async def servers(
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
    sqlite_url: str,
    redis_url: str,
    tmp_path: Path,
) -> AsyncIterator[Servers]:
    """Both data-plane servers on one set of services whose verifier hashes with a counter."""
    async with contextlib.AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(EchoUpstream())
        policy = write_policy(tmp_path, upstream, None, None)
        settings = make_settings(sqlite_url, policy=(policy,), redis_url=redis_url)
        opened = await stack.enter_async_context(open_services(settings))
        hasher = CountingHasher(settings.secret)
        verifier = KeyVerifier(
            store=opened.store,
            catalog=opened.policy.catalog,
            hasher=hasher,
            prefix=settings.key_prefix,
            shared=opened.shared,
            local_ttl=settings.local_cache_ttl,
            local_size=settings.local_cache_size,
            negative_ttl=settings.negative_cache_ttl,
            stale_window=settings.stale_window,
        )
        services = dataclasses.replace(opened, verifier=verifier)
        app = create_app(settings, services=services)
        client = await aiohttp_client(app)
        await _listening(redis_url, services)
        exact, prefixes = gateway_surfaces(app)
        ctx = FrontContext(services, app[FORWARDER], ("127.0.0.1", client.port), exact, prefixes)
        loop = asyncio.get_running_loop()
        front = await loop.create_server(lambda: FrontProtocol(ctx), "127.0.0.1", 0)
        stack.callback(front.close)
        port = front.sockets[0].getsockname()[1]
        yield Servers(
            services, hasher, f"http://127.0.0.1:{client.port}", f"http://127.0.0.1:{port}"
        )


async def _listening(redis_url: str, services: Services) -> None:
    """Wait until the invalidation listener has subscribed and reset the caches once, so that
    reset cannot race the first lookup a test counts."""
    assert services.shared is not None
    channel = services.shared.channel
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(10):
            while not (await client.pubsub_numsub(channel))[0][1]:  # noqa: ASYNC110 - Redis state, no event to await
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    await asyncio.sleep(0.1)  # the listener resets right after its subscription is answered


async def _status(url: str, key: str, *, body: bytes | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            "POST" if body is not None else "GET", url, data=body, headers={"X-API-KEY": key}
        ) as response,
    ):
        await response.read()
        return response.status


@pytest.mark.parametrize("server", ["aiohttp", "front"])
async def test_a_cache_miss_hashes_the_key_once(servers: Servers, server: str) -> None:
    """A key not in memory is hashed once for its Redis and database lookup; a hit once too."""
    base = servers.aiohttp_url if server == "aiohttp" else servers.front_url
    key = await servers.new_key()
    verifier = servers.services.verifier
    before, lookups = servers.hasher.count, verifier.lookups
    assert await _status(f"{base}/api/x", key) == 200
    assert (servers.hasher.count - before, verifier.lookups - lookups) == (1, 1)
    assert await _status(f"{base}/api/y", key) == 200  # now in memory
    assert (servers.hasher.count - before, verifier.lookups - lookups) == (2, 1)


@pytest.mark.parametrize("server", ["aiohttp", "front"])
async def test_a_request_with_a_body_hashes_its_key_once(servers: Servers, server: str) -> None:
    """A miss on a request with a body (decided in a task on the front) is hashed once too."""
    base = servers.aiohttp_url if server == "aiohttp" else servers.front_url
    key = await servers.new_key()
    before = servers.hasher.count
    assert await _status(f"{base}/api/upload", key, body=b"x" * 1000) == 200
    assert servers.hasher.count - before == 1


@pytest.mark.parametrize("server", ["aiohttp", "front"])
async def test_an_unknown_key_is_hashed_once(servers: Servers, server: str) -> None:
    """A well-formed key the store does not know: one hash, one lookup, then a 401."""
    base = servers.aiohttp_url if server == "aiohttp" else servers.front_url
    before, lookups = servers.hasher.count, servers.services.verifier.lookups
    assert await _status(f"{base}/api/x", keyformat.generate().text) == 401
    assert servers.hasher.count - before == 1
    assert servers.services.verifier.lookups - lookups == 1

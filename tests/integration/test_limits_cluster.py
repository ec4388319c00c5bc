"""Two real gateway processes sharing PostgreSQL and a Redis of the test's own: one rate limit
is one budget across both, and with Redis killed each keeps a share (the limit divided by the
two instances its heartbeat saw), answering 429 and never 500 or unlimited."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.limits.redis_engine import HEARTBEAT_SECONDS
from tests.faults import Server, throwaway_redis
from tests.integration.test_auth_support import free_port, wait_until
from tests.integration.test_multi_instance import Cluster, _ready, gateway_process
from tests.integration.upstream import EchoUpstream

POLICY = """
permissions:
  - {{name: demo.read, title: Read}}
upstreams:
  demo: {{url: "{url}"}}
limits:
  shared: 6/m
  anon: 4/m per address
routes:
  - {{path: /api/**, upstream: demo, permission: demo.read, limits: [shared]}}
  - {{path: /open/**, upstream: demo, auth: none, limits: [anon]}}
"""


@dataclass
class Pair:
    cluster: Cluster
    redis: Server
    upstream: EchoUpstream
    key: str

    async def get(self, which: int, path: str = "/api/x") -> int:
        url = self.cluster.urls[which] + path
        headers = {"X-API-KEY": self.key} if path.startswith("/api") else {}
        async with self.cluster.session.get(url, headers=headers) as response:
            await response.read()
            return response.status


@pytest.fixture
async def pair(pg_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    with throwaway_redis() as redis:
        async with EchoUpstream() as upstream:
            policy = tmp_path / "policy.yaml"
            policy.write_text(POLICY.format(url=upstream.url))
            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            env.update(
                {
                    "GATEWAY_MODE": "production",
                    "GATEWAY_SECRET": secrets.token_hex(32),
                    "GATEWAY_DATABASE_URL": pg_url,
                    "GATEWAY_REDIS_URL": redis.url,
                    "GATEWAY_REDIS_NAMESPACE": f"kgtest{uuid.uuid4().hex[:10]}",
                    "GATEWAY_POLICY": str(policy),
                    "GATEWAY_DATA_DIR": str(tmp_path / "var"),
                    "GATEWAY_REDIS_TIMEOUT": "0.3",
                    "GATEWAY_LOG_LEVEL": "WARNING",
                }
            )
            ports = free_port(), free_port()
            urls = (f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
            async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
                for port, url, name in zip(ports, urls, ("a", "b"), strict=True):
                    log = tmp_path / f"{name}.log"
                    proc = stack.enter_context(gateway_process(env, port, log))
                    ready = await wait_until(
                        lambda u=url, p=proc: _ready(session, u, p), seconds=60
                    )
                    assert ready, log.read_text()
                cluster = Cluster(env, urls, session)
                await cluster.cli(
                    "users", "create", "r@example.com", "--service", "--grant", "demo.read"
                )
                key = await cluster.cli(
                    "keys", "create", "--user", "r@example.com", "--permission", "demo.read"
                )
                yield Pair(cluster, redis, upstream, key)


async def test_one_budget_across_two_instances(pair: Pair) -> None:
    """`shared: 6/m` with requests alternating between A and B: six pass, then every request
    on either instance is 429, and the upstream saw exactly six."""
    statuses = [await pair.get(i % 2) for i in range(12)]
    assert statuses == [200] * 6 + [429] * 6
    assert len(pair.upstream.received) == 6


async def test_per_address_limit_is_one_budget_across_instances(pair: Pair) -> None:
    """`anon: 4/m per address` on an auth: none route, spread over both instances."""
    statuses = [await pair.get(i % 2, "/open/x") for i in range(6)]
    assert statuses == [200] * 4 + [429] * 2


async def test_redis_killed_each_instance_keeps_its_share(pair: Pair) -> None:
    """With Redis gone, each instance allows its share of `6/m`, 3 (two live instances were
    seen in the heartbeat set), then 429: six in all, never a 500, never unlimited."""
    assert await wait_until(lambda: _both_beat(pair), seconds=10)
    # Each instance reads the count at its own beat: the first to start may have read 1 just
    # before the second joined. After one more beat each has counted both.
    await asyncio.sleep(HEARTBEAT_SECONDS + 0.5)
    os.kill(pair.redis.pid, 9)
    statuses = {0: [await pair.get(0) for _ in range(5)], 1: [await pair.get(1) for _ in range(5)]}
    assert statuses == {0: [200] * 3 + [429] * 2, 1: [200] * 3 + [429] * 2}


async def _both_beat(pair: Pair) -> bool:
    client = aioredis.Redis.from_url(pair.redis.url)
    try:
        keys = [k async for k in client.scan_iter(match="*:instances")]
        return bool(keys) and await client.zcard(keys[0]) == 2
    finally:
        await client.aclose()

"""A real `gateway serve` keeps its answers bounded while PostgreSQL, Redis or both hang
(SIGSTOP: connections stay open and nothing answers), and recovers when they resume.

Throwaway servers only (tests/faults.py). Deadlines are short (database 0.5 s, Redis 0.3 s)
and the bounds generous: they are correctness bounds (a hung server must not hold a request
until it resumes), never speeds. The in-process cache lifetime is 0, so every request asks
Redis and then the database, and the stale window is what an entry is served from when
neither answers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.keys import format as keyformat
from tests.faults import Server, hung, throwaway_postgres, throwaway_redis
from tests.integration.faults import run_cli
from tests.integration.test_auth_support import free_port, policy_for, wait_until
from tests.integration.test_multi_instance import gateway_process
from tests.integration.upstream import EchoUpstream
from tests.services import database_url

REPORT = "/api/reports/daily"
DATABASE_DEADLINE, REDIS_DEADLINE = 0.5, 0.3
# A miss asks Redis, then the database: both deadlines, plus room for a loaded machine.
BOUND = REDIS_DEADLINE + DATABASE_DEADLINE + 2.5
# The CLI is a new Python process that imports the gateway before it does anything.
CLI_BOUND = 30.0


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Server]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Server]:
    with throwaway_redis() as server:
        yield server


@dataclass
class Gateway:
    url: str
    env: dict[str, str]
    session: aiohttp.ClientSession

    async def get(self, key: str) -> tuple[int, str, float]:
        """Status, content type and seconds taken by one proxied request with `key`."""
        start = time.monotonic()
        async with asyncio.timeout(3 * BOUND):  # fails the test rather than hanging it
            async with self.session.get(self.url + REPORT, headers={"X-API-KEY": key}) as resp:
                await resp.read()
                return resp.status, resp.content_type, time.monotonic() - start

    async def cli(self, *args: str) -> tuple[int, str, float]:
        """Exit status, stdout and seconds taken by one `gateway` command."""
        start = time.monotonic()
        status, out, _ = await run_cli(self.env, *args, seconds=2 * CLI_BOUND)
        return status, out, time.monotonic() - start

    async def new_key(self, email: str) -> str:
        for args in (
            ("users", "create", email, "--service", "--grant", "demo.reports.read"),
            ("keys", "create", "--user", email, "--permission", "demo.reports.read"),
        ):
            code, out, _ = await self.cli(*args)
            assert code == 0, out
        return out


@pytest.fixture
async def gateway(
    pg_server: Server, redis_server: Server, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """One gateway instance on a fresh database of the throwaway servers."""
    name = f"keygate_hung_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    async with EchoUpstream() as upstream, aiohttp.ClientSession() as session:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            {
                "GATEWAY_MODE": "production",
                "GATEWAY_SECRET": secrets.token_hex(32),
                "GATEWAY_DATABASE_URL": database_url(pg_server.url, name),
                "GATEWAY_REDIS_URL": redis_server.url,
                "GATEWAY_REDIS_NAMESPACE": name,
                "GATEWAY_POLICY": str(policy_for(tmp_path, upstream.url)),
                "GATEWAY_DATA_DIR": str(tmp_path / "var"),
                "GATEWAY_DATABASE_TIMEOUT": str(DATABASE_DEADLINE),
                "GATEWAY_REDIS_TIMEOUT": str(REDIS_DEADLINE),
                "GATEWAY_STORE_BACKOFF": "1",
                "GATEWAY_LOCAL_CACHE_TTL": "0",
                "GATEWAY_STALE_WINDOW": "60",
                "GATEWAY_LOG_LEVEL": "WARNING",
            }
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / "gateway.log"
        with gateway_process(env, port, log) as proc:

            async def ready() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    async with session.get(url + "/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            assert await wait_until(ready, seconds=60), log.read_text()
            yield Gateway(url, env, session)


async def _answers_again(gateway: Gateway, key: str) -> bool:
    status, _, _ = await gateway.get(key)
    return status == 200


async def test_a_miss_on_a_hung_database_is_a_503_within_the_deadline(
    gateway: Gateway, pg_server: Server
) -> None:
    """PostgreSQL stopped: a key never seen before (nothing cached anywhere) is answered 503
    problem+json within the deadlines, so are many at once (the back-off answers the later
    ones), and the same key is accepted once the database resumes."""
    key = await gateway.new_key("fresh@example.com")
    others = [keyformat.generate("apk").text for _ in range(20)]  # well formed, unknown
    with hung(pg_server):
        status, content_type, seconds = await gateway.get(key)
        assert (status, content_type) == (503, "application/problem+json")
        assert seconds < BOUND
        answers = await asyncio.gather(*(gateway.get(k) for k in others))
        assert {status for status, _, _ in answers} == {503}
        assert max(seconds for _, _, seconds in answers) < BOUND
    assert await wait_until(lambda: _answers_again(gateway, key), seconds=30)


async def test_a_hung_redis_does_not_hold_requests_nor_the_cli(
    gateway: Gateway, redis_server: Server
) -> None:
    """Redis stopped: a key in use is still accepted (from the database) within the Redis
    deadline, a revocation through the CLI returns, and the revoked key is refused."""
    key = await gateway.new_key("cached@example.com")
    assert (await gateway.get(key))[0] == 200  # now cached in Redis too
    with hung(redis_server):
        for _ in range(5):
            status, _, seconds = await gateway.get(key)
            assert status == 200
            assert seconds < BOUND
        code, out, seconds = await gateway.cli("keys", "revoke", key[:20])
        assert code == 0, out
        assert seconds < CLI_BOUND
        status, _, seconds = await gateway.get(key)
        assert status == 401
        assert seconds < BOUND


async def test_both_hung_answers_from_the_stale_window_or_503_within_the_bound(
    gateway: Gateway, pg_server: Server, redis_server: Server
) -> None:
    """Redis and PostgreSQL stopped together: a key used just before is served from its
    stale window, an unknown one is a 503, each within the bound; both work after resuming."""
    key = await gateway.new_key("both@example.com")
    assert (await gateway.get(key))[0] == 200
    unknown = keyformat.generate("apk").text
    with hung(redis_server), hung(pg_server):
        for _ in range(3):
            status, _, seconds = await gateway.get(key)
            assert status in (200, 503)
            assert seconds < BOUND
        status, content_type, seconds = await gateway.get(unknown)
        assert (status, content_type) == (503, "application/problem+json")
        assert seconds < BOUND
    assert await wait_until(lambda: _answers_again(gateway, key), seconds=30)

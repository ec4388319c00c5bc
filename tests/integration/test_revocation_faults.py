"""Revocation under Redis faults: two real `gateway serve` processes on a throwaway
PostgreSQL and a throwaway Redis, each under a steady load with one key. A revocation
acknowledged while Redis is hung or dead is enforced by both within the poll bound and never
undone when Redis comes back; on the embedded default (SQLite, no Redis) a CLI revocation
reaches the running gateway within the poll bound too.

Assertions are counts and orderings with generous margins: no request sent more than three
times the bound after the acknowledgement is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.integration.faults import Load, ThrowawayRedis, throwaway_postgres
from tests.integration.test_auth_support import free_port, policy_for, wait_until
from tests.integration.test_multi_instance import ROOT, gateway_process
from tests.integration.upstream import EchoUpstream
from tests.services import ServiceUnavailable, database_url

REPORT = "/api/reports/daily"
POLL = 0.3
# One poll interval plus a request that first waits for a hung Redis (its call deadline) and
# then asks the database; generous, as the machine is shared.
BOUND = POLL + 1.5
LATE = 3 * BOUND  # no request sent this long after an acknowledgement may be accepted


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[str]:
    try:
        with throwaway_postgres() as url:
            yield url
    except ServiceUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture
def own_redis() -> Iterator[ThrowawayRedis]:
    try:
        server = ThrowawayRedis()
    except ServiceUnavailable as exc:
        pytest.fail(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.close()


@dataclass
class Gateways:
    env: dict[str, str]
    urls: list[str]
    session: aiohttp.ClientSession

    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *args,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()

    async def new_key(self) -> str:
        await self.cli("users", "create", "load@example.com", "--service")
        await self.cli("users", "grant", "load@example.com", "demo.reports.read")
        return await self.cli(
            "keys", "create", "--user", "load@example.com", "--permission", "demo.reports.read"
        )

    def loads(self, key: str) -> list[Load]:
        return [Load(self.session, url + REPORT, key) for url in self.urls]


@contextlib.asynccontextmanager
async def gateways(
    database: str, redis_url: str | None, count: int, folder: Path
) -> AsyncIterator[Gateways]:
    async with EchoUpstream() as upstream:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            {
                "GATEWAY_MODE": "production",
                "GATEWAY_SECRET": secrets.token_hex(32),
                "GATEWAY_DATABASE_URL": database,
                "GATEWAY_POLICY": str(policy_for(folder, upstream.url)),
                "GATEWAY_DATA_DIR": str(folder / "var"),
                "GATEWAY_INVALIDATION_POLL_INTERVAL": str(POLL),
                # Long enough that only an invalidation explains a refusal; negative entries
                # short, so that the instances keep asking Redis after it comes back.
                "GATEWAY_LOCAL_CACHE_TTL": "600",
                "GATEWAY_NEGATIVE_CACHE_TTL": "0.2",
                # The load keeps sending the revoked key from one address: without this the
                # failed-key budget would answer 429 after 20 refusals, hiding the 401s counted.
                "GATEWAY_KEY_MAX_FAILURES": "1000000",
                "GATEWAY_LOG_LEVEL": "WARNING",
            }
        )
        if redis_url is not None:
            env["GATEWAY_REDIS_URL"] = redis_url
        ports = [free_port() for _ in range(count)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
            for n, (port, url) in enumerate(zip(ports, urls, strict=True)):
                log = folder / f"gateway{n}.log"
                proc = stack.enter_context(gateway_process(env, port, log))
                ready = await wait_until(lambda u=url, p=proc: _ready(session, u, p), seconds=60)
                assert ready, log.read_text()
            yield Gateways(env, urls, session)


async def _ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "the gateway process exited"
    try:
        async with session.get(url + "/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


@pytest.fixture
async def fresh_database(own_postgres: str) -> str:
    """A fresh database on the throwaway server (which goes away with the module)."""
    name = f"keygate_fault_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(own_postgres)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return database_url(own_postgres, name)


async def _accepted_by_all(loads: list[Load]) -> bool:
    return all(any(status == 200 for _, status in load.sent) for load in loads)


def _check_never_accepted_late(loads: list[Load], acknowledged: float, back: float) -> None:
    for load in loads:
        late = load.accepted_after(acknowledged + LATE)
        assert late == [], f"{load.url} accepted the revoked key {len(late)} times, at {late}"
        # The load really went on past the bound and after Redis was back, and was refused.
        assert len(load.answers_after(acknowledged + LATE)) >= 5
        assert load.answers_after(back).count(401) >= 5, load.answers_after(back)


async def test_cli_revocation_while_redis_hangs_holds_after_it_resumes(
    fresh_database: str, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """Revoked through the CLI while Redis is SIGSTOPped: both instances refuse within the
    poll bound, and after SIGCONT Redis's stale entry never brings the key back."""
    async with gateways(fresh_database, own_redis.url, 2, tmp_path) as cluster:
        key = await cluster.new_key()
        loads = cluster.loads(key)
        for load in loads:
            load.start()
        try:
            assert await wait_until(lambda: _accepted_by_all(loads))
            own_redis.hang()
            try:
                await cluster.cli("keys", "revoke", key[:20])
                acknowledged = time.monotonic()
                await asyncio.sleep(LATE + 1.0)
            finally:
                own_redis.resume()
            back = time.monotonic()
            await asyncio.sleep(3.0)
        finally:
            for load in loads:
                await load.stop()
    _check_never_accepted_late(loads, acknowledged, back)


async def test_api_revocation_while_redis_is_dead_holds_after_a_restart(
    fresh_database: str, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """Revoked through instance A's API while Redis is killed: both instances refuse within
    the poll bound, and go on refusing once Redis is restarted."""
    async with gateways(fresh_database, own_redis.url, 2, tmp_path) as cluster:
        key = await cluster.new_key()
        loads = cluster.loads(key)
        for load in loads:
            load.start()
        try:
            assert await wait_until(lambda: _accepted_by_all(loads))
            own_redis.kill()
            try:
                async with cluster.session.delete(
                    cluster.urls[0] + "/api/v1/api-keys/current",
                    headers={"Authorization": f"token {key}"},
                ) as response:
                    assert response.status == 200, await response.text()
                acknowledged = time.monotonic()
                await asyncio.sleep(LATE + 1.0)
            finally:
                own_redis.start()
            back = time.monotonic()
            await asyncio.sleep(3.0)
        finally:
            for load in loads:
                await load.stop()
    _check_never_accepted_late(loads, acknowledged, back)


async def test_embedded_cli_revocation_reaches_the_running_gateway(tmp_path: Path) -> None:
    """SQLite and no Redis: a CLI revocation (another process) is enforced by the running
    gateway within the poll bound, though its cache entry would live for minutes."""
    database = f"sqlite:///{tmp_path / 'keygate.db'}"
    async with gateways(database, None, 1, tmp_path) as gateway:
        key = await gateway.new_key()
        loads = gateway.loads(key)
        loads[0].start()
        try:
            assert await wait_until(lambda: _accepted_by_all(loads))
            await gateway.cli("keys", "revoke", key[:20])
            acknowledged = time.monotonic()
            await asyncio.sleep(LATE + 1.0)
        finally:
            await loads[0].stop()
    late = loads[0].accepted_after(acknowledged + LATE)
    assert late == [], f"accepted the revoked key {len(late)} times, at {late}"
    after = loads[0].answers_after(acknowledged + LATE)
    assert len(after) >= 5
    assert set(after) == {401}, after

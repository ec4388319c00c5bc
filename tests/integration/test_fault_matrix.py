"""The rest of the fault matrix: two real `gateway serve` processes on a throwaway PostgreSQL
and a throwaway Redis, each under a bounded load. The database stopped or hung with Redis
healthy, both down (a revocation before, and one attempted during), Redis hung while a
revocation goes through the API, and Redis killed while one goes through the CLI.

What is checked: a revocation that could not be written is never acknowledged (the CLI exits
non-zero with one line, the API answers 503) and leaves the key as it was; a revocation
acknowledged before a fault stays enforced on both instances through it; one acknowledged
during or after a fault is enforced on both within the poll bound. Counts and orderings with
generous margins (no request sent more than three times the bound after an acknowledgement
is accepted), never speeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.keys import format as keyformat
from tests.faults import Server, _wait_gone, hung
from tests.integration.faults import Load, ThrowawayRedis, run_cli
from tests.integration.test_auth_support import free_port, policy_for, wait_until
from tests.integration.test_multi_instance import gateway_process
from tests.integration.test_revocation_faults import _check_never_accepted_late, _ready
from tests.integration.upstream import EchoUpstream
from tests.services import _free_port, _pg_binary, database_url

REPORT = "/api/reports/daily"
CURRENT = "/api/v1/api-keys/current"
POLL, DATABASE_DEADLINE, REDIS_DEADLINE = 0.3, 0.5, 0.3
# One poll interval plus a request that first waits for a hung Redis and then asks the
# database; generous, as the machine is shared.
BOUND = POLL + 1.5
LATE = 3 * BOUND  # no request sent this long after an acknowledgement may be accepted
# A refused write answers within the call deadlines, with room for a loaded machine.
WRITE_BOUND = REDIS_DEADLINE + DATABASE_DEADLINE + 2.5
CLI_BOUND = 30.0  # the CLI is a new Python process that imports the gateway first


class OwnPostgres:
    """A PostgreSQL server of our own that can be stopped (immediate) and started again on
    the same port and data, or hung; always stopped by its postmaster's process id."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
        assert initdb is not None, "no initdb binary: the fault matrix needs it"
        assert pg_ctl is not None, "no pg_ctl binary: the fault matrix needs it"
        self._pg_ctl = pg_ctl
        self.data = tempfile.mkdtemp(prefix="keygate-matrix-pg-")
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run_as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.data, "postgres")
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self.pid = 0
        self._ctl(initdb, "-D", self.data, "-U", "postgres", "-A", "trust")

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self._run_as, *args], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -h 127.0.0.1"
        log = f"{self.data}/log"
        self._ctl(self._pg_ctl, "-D", self.data, "-o", options, "-l", log, "-w", "start")
        self.pid = int((Path(self.data) / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self._ctl(self._pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop")
        self.pid = 0

    def hung(self) -> contextlib.AbstractContextManager[None]:
        return hung(Server(self.url, self.pid))

    def close(self) -> None:
        if self.pid:
            # Resumed first: a stopped postmaster would not act on the signal to stop.
            for each in Server("", self.pid).pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(each, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGQUIT)  # immediate shutdown
            _wait_gone(self.pid)
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
async def postgres(own_postgres: OwnPostgres) -> AsyncIterator[OwnPostgres]:
    """The module's server, started again after a test that stopped it."""
    yield own_postgres
    if not own_postgres.pid:
        own_postgres.start()


@dataclass
class Cluster:
    env: dict[str, str]
    urls: list[str]
    session: aiohttp.ClientSession

    async def cli(self, *args: str) -> tuple[int, str, str]:
        """Exit status, stdout and stderr of one `gateway` command."""
        return await run_cli(self.env, *args, seconds=2 * CLI_BOUND)

    async def new_key(self, email: str) -> str:
        for args in (
            ("users", "create", email, "--service", "--grant", "demo.reports.read"),
            ("keys", "create", "--user", email, "--permission", "demo.reports.read"),
        ):
            code, out, err = await self.cli(*args)
            assert code == 0, err
        return out

    async def revoke_through_api(self, key: str) -> int:
        """Instance A's answer to the key revoking itself."""
        async with asyncio.timeout(3 * WRITE_BOUND):  # fails the test rather than hanging it
            headers = {"Authorization": f"token {key}"}
            async with self.session.delete(self.urls[0] + CURRENT, headers=headers) as response:
                await response.read()
                return response.status

    async def statuses(self, key: str) -> list[int]:
        """One request with `key` to each instance."""
        answers = []
        for url in self.urls:
            async with asyncio.timeout(3 * WRITE_BOUND):
                headers = {"X-API-KEY": key}
                async with self.session.get(url + REPORT, headers=headers) as response:
                    await response.read()
                    answers.append(response.status)
        return answers

    def loads(self, key: str) -> list[Load]:
        return [Load(self.session, url + REPORT, key, pause=0.05) for url in self.urls]


@contextlib.asynccontextmanager
async def cluster_on(
    server: OwnPostgres, redis: ThrowawayRedis, folder: Path
) -> AsyncIterator[Cluster]:
    """Two instances on a fresh database of `server` and on `redis`, with short settings."""
    name = f"keygate_matrix_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    async with EchoUpstream() as upstream:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            {
                "GATEWAY_MODE": "production",
                "GATEWAY_SECRET": secrets.token_hex(32),
                "GATEWAY_DATABASE_URL": database_url(server.url, name),
                "GATEWAY_REDIS_URL": redis.url,
                "GATEWAY_POLICY": str(policy_for(folder, upstream.url)),
                "GATEWAY_DATA_DIR": str(folder / "var"),
                "GATEWAY_INVALIDATION_POLL_INTERVAL": str(POLL),
                "GATEWAY_DATABASE_TIMEOUT": str(DATABASE_DEADLINE),
                "GATEWAY_REDIS_TIMEOUT": str(REDIS_DEADLINE),
                "GATEWAY_STORE_BACKOFF": "0.5",
                # Long enough that only an invalidation explains a refusal; negative entries
                # short, so that the instances keep asking once the servers are back.
                "GATEWAY_LOCAL_CACHE_TTL": "600",
                "GATEWAY_NEGATIVE_CACHE_TTL": "0.2",
                # The loads send refused keys from one address on purpose: refusals stay 401.
                "GATEWAY_KEY_MAX_FAILURES": "1000000",
                "GATEWAY_LOG_LEVEL": "WARNING",
            }
        )
        ports = [free_port() for _ in range(2)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
            for n, (port, url) in enumerate(zip(ports, urls, strict=True)):
                log = folder / f"gateway{n}.log"
                proc = stack.enter_context(gateway_process(env, port, log))
                ready = await wait_until(lambda u=url, p=proc: _ready(session, u, p), seconds=60)
                assert ready, log.read_text()
            yield Cluster(env, urls, session)


@contextlib.asynccontextmanager
async def running(loads: list[Load]) -> AsyncIterator[None]:
    for load in loads:
        load.start()
    try:
        yield
    finally:
        for load in loads:
            await load.stop()


async def _all(cluster: Cluster, key: str, status: int) -> bool:
    return set(await cluster.statuses(key)) == {status}


async def _revoked_everywhere(cluster: Cluster, key: str) -> None:
    """`key` revoked through the CLI with every server healthy, and refused by both."""
    code, _, err = await cluster.cli("keys", "revoke", key[:20])
    assert code == 0, err
    assert await wait_until(lambda: _all(cluster, key, 401), seconds=LATE)


def _never_accepted_after(loads: list[Load], moment: float) -> None:
    for load in loads:
        accepted = load.accepted_after(moment)
        assert accepted == [], f"{load.url} accepted a revoked key {len(accepted)} times"
        answers = load.answers_after(moment)
        assert len(answers) >= 5  # the load really went on
        assert set(answers) <= {401, 503}, answers  # refused, never an error nor no answer


def _unacknowledged(code: int, err: str) -> None:
    assert code != 0
    assert len(err.splitlines()) == 1, err  # one line, never a traceback
    assert "Traceback" not in err


def _never_refused_before(loads: list[Load], moment: float) -> None:
    """A key nobody managed to revoke: never a 401 from either instance before `moment`."""
    for load in loads:
        early = [status for at, status in load.sent if at < moment]
        assert 401 not in early, f"{load.url} refused a key whose revocation was refused"


async def test_a_stopped_database_acknowledges_no_revocation_and_keeps_the_earlier_one(
    postgres: OwnPostgres, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """PostgreSQL stopped, Redis healthy: a CLI or API revocation is refused (non-zero with
    one line, 503) and the key stays valid; a key revoked before stays refused on both; after
    the restart an API revocation is enforced on both within the bound."""
    async with cluster_on(postgres, own_redis, tmp_path) as cluster:
        revoked = await cluster.new_key("revoked@example.com")
        kept = await cluster.new_key("kept@example.com")
        assert await wait_until(lambda: _all(cluster, kept, 200))
        revoked_loads, kept_loads = cluster.loads(revoked), cluster.loads(kept)
        async with running(revoked_loads + kept_loads):
            await _revoked_everywhere(cluster, revoked)
            refused = time.monotonic()
            postgres.stop()
            try:
                code, _, err = await cluster.cli("keys", "revoke", kept[:20])
                _unacknowledged(code, err)
                assert await cluster.revoke_through_api(kept) == 503
                await asyncio.sleep(1.0)
            finally:
                postgres.start()
            # Nothing was written: both instances accept the key once the database is back.
            assert await wait_until(lambda: _all(cluster, kept, 200), seconds=LATE)
            assert await cluster.revoke_through_api(kept) == 200
            acknowledged = time.monotonic()
            await asyncio.sleep(LATE + 1.0)
    _never_accepted_after(revoked_loads, refused)
    _never_refused_before(kept_loads, acknowledged)
    _never_accepted_after(kept_loads, acknowledged + LATE)


async def test_a_hung_database_acknowledges_no_revocation_and_keeps_the_earlier_one(
    postgres: OwnPostgres, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """PostgreSQL SIGSTOPped, Redis healthy: an API revocation is a 503 within the deadline
    bound, a CLI one exits non-zero with one line, the key stays valid; a key revoked before
    stays refused on both."""
    async with cluster_on(postgres, own_redis, tmp_path) as cluster:
        revoked = await cluster.new_key("revoked@example.com")
        kept = await cluster.new_key("kept@example.com")
        assert await wait_until(lambda: _all(cluster, kept, 200))
        revoked_loads, kept_loads = cluster.loads(revoked), cluster.loads(kept)
        async with running(revoked_loads + kept_loads):
            await _revoked_everywhere(cluster, revoked)
            refused = time.monotonic()
            with postgres.hung():
                start = time.monotonic()
                assert await cluster.revoke_through_api(kept) == 503
                assert time.monotonic() - start < WRITE_BOUND
                start = time.monotonic()
                code, _, err = await cluster.cli("keys", "revoke", kept[:20])
                _unacknowledged(code, err)
                assert time.monotonic() - start < CLI_BOUND
                await asyncio.sleep(1.0)
            resumed = time.monotonic()
            assert await wait_until(lambda: _all(cluster, kept, 200), seconds=LATE)
            await asyncio.sleep(1.0)
    _never_accepted_after(revoked_loads, refused)
    _never_refused_before(kept_loads, time.monotonic())
    for load in kept_loads:
        assert 200 in load.answers_after(resumed)


async def test_with_both_down_a_revoked_key_stays_refused_and_unknown_keys_get_503(
    postgres: OwnPostgres, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """PostgreSQL stopped and Redis killed: a key revoked before is never accepted again by
    either instance, an unknown key is a 503; once both return, everything works."""
    async with cluster_on(postgres, own_redis, tmp_path) as cluster:
        revoked = await cluster.new_key("revoked@example.com")
        kept = await cluster.new_key("kept@example.com")
        loads = cluster.loads(revoked)
        async with running(loads):
            await _revoked_everywhere(cluster, revoked)
            refused = time.monotonic()
            try:
                postgres.stop()
                own_redis.kill()
                for _ in range(3):
                    unknown = keyformat.generate("apk").text
                    assert await cluster.statuses(unknown) == [503, 503]
                await asyncio.sleep(LATE)
            finally:
                own_redis.start()
                if not postgres.pid:
                    postgres.start()
            assert await wait_until(lambda: _all(cluster, kept, 200), seconds=LATE)
            assert await _all(cluster, keyformat.generate("apk").text, 401)
            fresh = await cluster.new_key("fresh@example.com")
            assert await wait_until(lambda: _all(cluster, fresh, 200), seconds=LATE)
            await asyncio.sleep(1.0)
    _never_accepted_after(loads, refused)
    for load in loads:
        assert load.answers_after(refused).count(401) >= 5


async def test_an_api_revocation_while_redis_hangs_holds_after_it_resumes(
    postgres: OwnPostgres, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """Revoked through instance A's API while Redis is SIGSTOPped: both instances refuse
    within the poll bound, and after SIGCONT Redis's stale entry never brings the key back."""
    async with cluster_on(postgres, own_redis, tmp_path) as cluster:
        key = await cluster.new_key("load@example.com")
        loads = cluster.loads(key)
        async with running(loads):
            assert await wait_until(lambda: _all(cluster, key, 200))
            own_redis.hang()
            try:
                assert await cluster.revoke_through_api(key) == 200
                acknowledged = time.monotonic()
                await asyncio.sleep(LATE + 1.0)
            finally:
                own_redis.resume()
            back = time.monotonic()
            await asyncio.sleep(3.0)
    _check_never_accepted_late(loads, acknowledged, back)


async def test_a_cli_revocation_while_redis_is_dead_holds_after_a_restart(
    postgres: OwnPostgres, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """Revoked through the CLI while Redis is killed: acknowledged through the database (exit
    0), refused by both instances within the poll bound, and still after Redis restarts."""
    async with cluster_on(postgres, own_redis, tmp_path) as cluster:
        key = await cluster.new_key("load@example.com")
        loads = cluster.loads(key)
        async with running(loads):
            assert await wait_until(lambda: _all(cluster, key, 200))
            own_redis.kill()
            try:
                code, _, err = await cluster.cli("keys", "revoke", key[:20])
                assert code == 0, err
                assert "Traceback" not in err
                acknowledged = time.monotonic()
                await asyncio.sleep(LATE + 1.0)
            finally:
                own_redis.start()
            back = time.monotonic()
            await asyncio.sleep(3.0)
    _check_never_accepted_late(loads, acknowledged, back)
    _never_accepted_after(loads, acknowledged + LATE)


async def test_with_both_down_a_revocation_changes_nothing_and_a_later_one_holds(
    postgres: OwnPostgres, own_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    """PostgreSQL stopped and Redis killed: a CLI revocation exits non-zero with one line, an
    API one is a 503, the key stays valid on both once the servers return; an API revocation
    then is enforced on both within the bound."""
    async with cluster_on(postgres, own_redis, tmp_path) as cluster:
        key = await cluster.new_key("kept@example.com")
        assert await wait_until(lambda: _all(cluster, key, 200))
        loads = cluster.loads(key)
        async with running(loads):
            try:
                postgres.stop()
                own_redis.kill()
                code, _, err = await cluster.cli("keys", "revoke", key[:20])
                _unacknowledged(code, err)
                assert await cluster.revoke_through_api(key) == 503
                await asyncio.sleep(1.0)
            finally:
                own_redis.start()
                if not postgres.pid:
                    postgres.start()
            # Nothing was written: both instances accept the key once the servers are back.
            assert await wait_until(lambda: _all(cluster, key, 200), seconds=LATE)
            assert await cluster.revoke_through_api(key) == 200
            acknowledged = time.monotonic()
            await asyncio.sleep(LATE + 1.0)
    _never_refused_before(loads, acknowledged)
    _never_accepted_after(loads, acknowledged + LATE)

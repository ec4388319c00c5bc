"""`gateway serve` as `make run` starts it: development mode on a fresh data folder, health and
readiness, readiness following the database, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
EXAMPLE = ROOT / "policies" / "example.yaml"
START_SECONDS = 60.0
STOP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


@contextmanager
def started(workdir: Path, **settings: str) -> Iterator[Server]:
    """`python -m gateway serve` in `workdir`, with only the given GATEWAY_* settings."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_MODE="development",
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        GATEWAY_POLICY=str(EXAMPLE),
        **settings,
    )
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            [PYTHON, "-m", "gateway", "serve"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", out, err)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_SECONDS)


@asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def wait_healthy(server: Server, session: aiohttp.ClientSession) -> None:
    deadline = asyncio.get_running_loop().time() + START_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"gateway serve exited early:\n{server.stdout()}\n{server.stderr()}")
        try:
            async with session.get(server.base + "/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail(f"gateway serve did not become healthy:\n{server.stdout()}\n{server.stderr()}")


async def status(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def stop(server: Server) -> int:
    """SIGTERM, then the exit code once the process has ended."""
    server.proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(server.proc.wait, STOP_SECONDS)


async def test_development_serve_on_a_fresh_folder(tmp_path: Path) -> None:
    """`gateway serve` creates var/secret, says so and where it listens, is healthy and ready,
    and stops cleanly on SIGTERM."""
    with started(tmp_path) as server:
        async with client() as session:
            await wait_healthy(server, session)
            assert await status(session, server.base + "/healthz") == (200, {"status": "ok"})
            code, body = await status(session, server.base + "/readyz")
            assert code == 200
            assert body["status"] == "ready"
            assert body["checks"] == {"database": "ok"}
            async with session.get(server.base + "/api/reports/daily") as resp:
                assert resp.status == 401  # the data plane is up and wants a key
        assert await stop(server) == 0
        secret = tmp_path / "var" / "secret"
        assert secret.is_file()
        assert (secret.stat().st_mode & 0o777) == 0o600
        assert (tmp_path / "var" / "keygate.db").is_file()
        out = server.stdout()
        assert f"created a hashing secret in {Path('var') / 'secret'}" in out
        assert f"serving on {server.base}" in out
        assert secret.read_text().strip() not in out + server.stderr()
        assert "Traceback" not in server.stderr()


async def test_second_start_reuses_the_secret(tmp_path: Path) -> None:
    """A restart keeps the development secret and does not announce a new one."""
    for run in range(2):
        with started(tmp_path) as server:
            async with client() as session:
                await wait_healthy(server, session)
            assert await stop(server) == 0
            created = "created a hashing secret" in server.stdout()
            assert created is (run == 0)
            if run == 0:
                first = (tmp_path / "var" / "secret").read_bytes()
    assert (tmp_path / "var" / "secret").read_bytes() == first


async def test_readyz_follows_the_database(tmp_path: Path, pg_server: str, pg_url: str) -> None:
    """/readyz is 503 while the database is gone, and /healthz stays 200; SIGTERM still stops it."""
    with started(tmp_path, GATEWAY_DATABASE_URL=pg_url) as server:
        async with client() as session:
            await wait_healthy(server, session)
            code, body = await status(session, server.base + "/readyz")
            assert (code, body["status"]) == (200, "ready")

            name = urlsplit(pg_url).path.lstrip("/")
            admin = await asyncpg.connect(pg_server)
            try:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            finally:
                await admin.close()

            for _ in range(3):  # stays unready: no request brings it back
                code, body = await status(session, server.base + "/readyz")
                assert code == 503
                assert body["status"] == "unavailable"
                assert body["checks"] == {"database": "unavailable"}
                assert await status(session, server.base + "/healthz") == (200, {"status": "ok"})
        assert await stop(server) == 0
        assert "Traceback" not in server.stderr()

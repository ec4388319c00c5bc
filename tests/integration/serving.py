"""`gateway serve` as a real process for the supervisor and reload tests: started with only
the given settings, its stdout and stderr in files, its workers found in /proc, and always
stopped (SIGKILL to whatever is left) when the test ends."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.upstream import free_port

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 60.0
POLICY = """
permissions:
  - {{name: t.read, title: Read}}
upstreams:
  main: {{url: "{url}", read_timeout: 20}}
routes:
  - {{path: /public/**, upstream: main, auth: none}}
{extra}
"""


def policy_text(upstream_url: str, extra: str = "") -> str:
    """A policy with an open `/public/**` route to the upstream, plus `extra` routes."""
    return POLICY.format(url=upstream_url, extra=extra)


def environment(tmp_path: Path, policy: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_MODE="production",
        GATEWAY_SECRET=secrets.token_hex(32),
        GATEWAY_DATABASE_URL=f"sqlite:///{tmp_path / 'keygate.db'}",
        GATEWAY_POLICY=str(policy),
        GATEWAY_DATA_DIR=str(tmp_path),
        PYTHONPATH=str(ROOT),
        **settings,
    )
    return env


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    out: Path
    err: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def workers(self) -> list[int]:
        return [pid for pid in children(self.proc.pid) if "spawn_main" in cmdline(pid)]

    async def wait_serving(self, workers: int = 1) -> None:
        """Until the banner is out (every worker serves) and `workers` processes exist."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway serve exited:\n{self.stdout()}\n{self.stderr()}")
            if "serving on" in self.stdout() and len(self.workers()) == workers:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"gateway serve did not start:\n{self.stdout()}\n{self.stderr()}")

    async def exit_status(self, seconds: float) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), seconds)


@contextmanager
def serve(
    env: dict[str, str],
    workdir: Path,
    *args: str,
    port: int | None = None,
    session: bool = False,
) -> Iterator[Served]:
    """`gateway serve` on `port` (a free one by default); in a session and process group of
    its own with `session`, as a shell runs a foreground job."""
    port = port or free_port()
    out, err = workdir / f"stdout-{port}.txt", workdir / f"stderr-{port}.txt"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{port}", *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            start_new_session=session,
        )
    served = Served(proc, port, out, err)
    try:
        yield served
    finally:
        left = served.workers()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def client(seconds: float = 10.0) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session:
        yield session


async def get(session: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    async with session.get(url, **kw) as response:
        await response.read()
        return response.status


def children(pid: int) -> list[int]:
    """Direct children of `pid` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def failing_worker(
    _settings: object, number: int, _sock: object, report: Connection, _master: int
) -> None:
    """A worker target that cannot start (as one whose database is gone): it says why."""
    report.send(("failed", f"database: worker {number} found no database here"))
    sys.exit(1)

"""Throwaway servers a test may stop, hang or kill, and a bounded request load.

Never the shared PostgreSQL and Redis: these are started from local binaries for the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.services import ServiceUnavailable, _free_port, _local_postgres, _pg_binary, _wait_port

ROOT = Path(__file__).resolve().parents[2]


async def run_cli(env: Mapping[str, str], *args: str, seconds: float) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of one `gateway` command; killed (and the test failed by
    the TimeoutError) if it takes longer than `seconds`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        env=dict(env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip(), err.decode().strip()


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server of our own (initdb + pg_ctl), removed afterwards."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        raise ServiceUnavailable("no initdb/pg_ctl binaries for a throwaway PostgreSQL")
    with _local_postgres(initdb, pg_ctl) as url:
        yield url


class ThrowawayRedis:
    """A redis-server of our own on a fixed port: it can be hung, resumed, killed, restarted."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceUnavailable("no redis-server binary for a throwaway Redis")
        self._binary = binary
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                self._binary,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    def hang(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._stopped = True

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)
        self._stopped = False

    def kill(self) -> None:
        assert self._proc is not None
        if self._stopped:
            self.resume()
        self._proc.kill()
        self._proc.wait(10)
        self._proc = None

    def close(self) -> None:
        if self._proc is not None:
            self.kill()


@dataclass
class Load:
    """Requests with one key against one instance, one after another, until stopped: what
    was sent when, and what came back (0: no answer)."""

    session: aiohttp.ClientSession
    url: str
    key: str
    pause: float = 0.02
    sent: list[tuple[float, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        while True:
            at = time.monotonic()
            try:
                async with self.session.get(
                    self.url, headers={"X-API-KEY": self.key}, timeout=timeout
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            self.sent.append((at, status))
            await asyncio.sleep(self.pause)

    def accepted_after(self, moment: float) -> list[float]:
        """Send times of accepted requests sent after `moment`, relative to it."""
        return [at - moment for at, status in self.sent if status == 200 and at > moment]

    def answers_after(self, moment: float) -> list[int]:
        return [status for at, status in self.sent if at > moment]

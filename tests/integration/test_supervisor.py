"""The master of `gateway serve` (gateway/supervisor.py) with real processes and signals: a
dead worker is started again while the port keeps answering, no worker outlives a killed
master, a second instance on the address and a broken policy stop the start with one line,
a worker that cannot start stops the master, and SIGTERM drains for `shutdown_timeout`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.integration.serving import (
    ROOT,
    alive,
    client,
    environment,
    get,
    policy_text,
    serve,
)
from tests.integration.upstream import EchoUpstream, free_port


def _policy(tmp_path: Path, url: str) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(url))
    return policy


async def test_a_killed_worker_is_started_again_and_the_port_keeps_answering(
    tmp_path: Path,
) -> None:
    """kill -9 of one of two workers: every request after it is answered (by the other, then
    by both), the master logs and starts a new worker, and no request fails."""
    async with EchoUpstream() as upstream:
        env = environment(tmp_path, _policy(tmp_path, upstream.url))
        with serve(env, tmp_path, "--workers", "2") as gw:
            await gw.wait_serving(workers=2)
            victim, other = gw.workers()
            os.kill(victim, signal.SIGKILL)
            statuses = []
            async with client() as session:
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline:
                    # A new connection each time, so the kernel may give it to any worker.
                    async with aiohttp.ClientSession() as fresh:
                        statuses.append(await get(fresh, f"{gw.base}/public/x"))
                    workers = gw.workers()
                    if (
                        len(workers) == 2
                        and victim not in workers
                        and "serves again" in (gw.stderr())
                    ):
                        break
                    await asyncio.sleep(0.05)
                assert await get(session, f"{gw.base}/public/y") == 200
            assert set(statuses) == {200}
            workers = gw.workers()
            assert other in workers
            assert victim not in workers
            assert len(workers) == 2
            err = gw.stderr()
            assert "worker" in err
            assert "was killed by SIGKILL; starting it again" in err
            assert "Traceback" not in err


async def test_one_worker_is_supervised_too(tmp_path: Path) -> None:
    """With --workers 1 the master still holds the socket: a request sent while the only
    worker is dead waits in the backlog and is answered by the new one."""
    async with EchoUpstream() as upstream:
        env = environment(tmp_path, _policy(tmp_path, upstream.url))
        with serve(env, tmp_path, "--workers", "1") as gw:
            await gw.wait_serving(workers=1)
            (worker,) = gw.workers()
            os.kill(worker, signal.SIGKILL)
            async with client(seconds=40) as session:
                assert await get(session, f"{gw.base}/public/x") == 200
            assert worker not in gw.workers()
            assert gw.proc.poll() is None


async def test_no_worker_survives_a_killed_master(tmp_path: Path) -> None:
    """SIGKILL to the master: every worker is gone within a few seconds, and the port with
    them."""
    env = environment(tmp_path, _policy(tmp_path, "http://127.0.0.1:9"))
    with serve(env, tmp_path, "--workers", "2") as gw:
        await gw.wait_serving(workers=2)
        workers = gw.workers()
        gw.proc.kill()
        gw.proc.wait(10)
        deadline = time.monotonic() + 5
        # A poll of /proc: nothing to await for another process's end.
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)]
        async with client(seconds=2) as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await get(session, f"{gw.base}/healthz")


async def test_a_second_instance_on_the_same_address_is_refused(tmp_path: Path) -> None:
    """A second `gateway serve` on a served address exits non-zero with one line, prints no
    banner, and the first goes on serving."""
    env = environment(tmp_path, _policy(tmp_path, "http://127.0.0.1:9"))
    with serve(env, tmp_path, "--workers", "2") as first:
        await first.wait_serving(workers=2)
        (tmp_path / "second").mkdir()
        with serve(env, tmp_path / "second", "--workers", "2", port=first.port) as second:
            assert await second.exit_status(60) == 1
            lines = second.stderr().splitlines()
            assert lines == [
                f"gateway: cannot listen on 127.0.0.1:{first.port}: address already in use "
                "(another process serves it)"
            ]
            assert "serving on" not in second.stdout()
        async with client() as session:
            assert await get(session, f"{first.base}/healthz") == 200
        assert first.proc.poll() is None


async def test_a_broken_policy_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """A broken policy with --workers 2: one line, exit status 1, no banner, no traceback,
    and no worker was started."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text("http://127.0.0.1:9") + "  - {path: /x, upstream: nowhere}\n")
    env = environment(tmp_path, policy)
    with serve(env, tmp_path, "--workers", "2") as gw:
        assert await gw.exit_status(60) == 1
        lines = gw.stderr().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("gateway: ")
        assert "nowhere" in lines[0]
        assert "serving on" not in gw.stdout()


def test_a_worker_that_cannot_start_stops_the_master(tmp_path: Path) -> None:
    """The master with workers that report a failure at start (as when the database is gone):
    the failing worker's one line, exit status 1, no banner, no traceback."""
    script = (
        "import sys\n"
        "from gateway.settings import Settings\n"
        "from gateway.supervisor import Supervisor, listen\n"
        "from tests.integration.serving import failing_worker\n"
        f"settings = Settings(listen_port={free_port()}, workers=2, shutdown_timeout=1)\n"
        "status = Supervisor(settings, listen(settings), failing_worker,\n"
        "                    lambda: print('serving on', flush=True)).run()\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gateway: worker ")
    assert lines[0].endswith("found no database here")
    assert "serving on" not in result.stdout


@pytest.mark.parametrize("fast", ["true", "false"], ids=["front", "aiohttp"])
@pytest.mark.parametrize(("shutdown", "finished"), [("5", True), ("1", False)])
async def test_sigterm_drains_for_shutdown_timeout(
    tmp_path: Path, fast: str, shutdown: str, finished: bool
) -> None:
    """SIGTERM while a 2 s upstream answer is in flight: with shutdown_timeout 5 it is
    answered in full, with 1 it is cut; either way the master exits 0, within the time."""
    arrived = asyncio.Event()

    async def slow(_request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(2)
        return web.Response(text="slow and complete")

    upstream = EchoUpstream()
    upstream.route("GET", "/public/slow", slow)
    async with upstream:
        env = environment(
            tmp_path,
            _policy(tmp_path, upstream.url),
            GATEWAY_SHUTDOWN_TIMEOUT=shutdown,
            GATEWAY_FAST_DATA_PLANE=fast,
        )
        with serve(env, tmp_path, "--workers", "1") as gw:
            await gw.wait_serving(workers=1)
            async with client(seconds=20) as session:

                async def fetch() -> str:
                    async with session.get(f"{gw.base}/public/slow") as response:
                        assert response.status == 200
                        return await response.text()

                request = asyncio.create_task(fetch())
                await asyncio.wait_for(arrived.wait(), 10)
                stopped = time.monotonic()
                gw.proc.send_signal(signal.SIGTERM)
                if finished:
                    assert await request == "slow and complete"
                else:
                    with pytest.raises(aiohttp.ClientError):
                        await request
                    assert time.monotonic() - stopped < 1.9  # cut before the answer came
                assert await gw.exit_status(20) == 0
                assert time.monotonic() - stopped < float(shutdown) + 4
            assert "Traceback" not in gw.stderr()


async def test_ctrl_c_stops_master_and_workers_quietly(tmp_path: Path) -> None:
    """SIGINT to the whole process group (Ctrl-C in a terminal): the master drains the
    workers and exits 0; no worker prints a KeyboardInterrupt traceback."""
    env = environment(tmp_path, _policy(tmp_path, "http://127.0.0.1:9"))
    with serve(env, tmp_path, "--workers", "2", session=True) as gw:
        await gw.wait_serving(workers=2)
        workers = gw.workers()
        os.killpg(gw.proc.pid, signal.SIGINT)
        assert await gw.exit_status(30) == 0
        assert not [pid for pid in workers if alive(pid)]
        err = gw.stderr()
        assert "Traceback" not in err
        assert "KeyboardInterrupt" not in err

"""`gateway serve --workers N` as a real process: workers share the port, SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.integration.upstream import EchoUpstream, free_port

ROOT = Path(__file__).resolve().parents[2]
POLICY = """
permissions:
  - {{name: t.read, title: Read}}
upstreams:
  main: {{url: "{url}"}}
routes:
  - {{path: /public/**, upstream: main, auth: none}}
"""


def _env(tmp_path: Path, upstream_url: str) -> dict[str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=upstream_url))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_MODE": "production",
            "GATEWAY_SECRET": secrets.token_hex(32),
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'keygate.db'}",
            "GATEWAY_POLICY": str(policy),
            "GATEWAY_DATA_DIR": str(tmp_path),
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _children(pid: int) -> list[int]:
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


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _wait_until_serving(port: int) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)


async def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    """Two workers answer on one port; SIGTERM to the parent stops every worker cleanly."""
    port = free_port()
    async with EchoUpstream() as upstream:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "gateway", "serve"),
            *("--listen", f"127.0.0.1:{port}", "--workers", "2"),
            env=_env(tmp_path, upstream.url),
            stdout=asyncio.subprocess.DEVNULL,
        )
        try:
            await _wait_until_serving(port)
            # A new client connection each time, so the kernel spreads them over the workers;
            # each worker keeps its own pooled upstream connection: two workers, two ports.
            # The second worker may still be starting, hence the bounded wait for it.
            async with asyncio.timeout(30):
                for i in range(1000):
                    async with (
                        aiohttp.ClientSession() as session,
                        session.get(f"http://127.0.0.1:{port}/public/{i}") as response,
                    ):
                        assert response.status == 200
                    if len({r.peer_port for r in upstream.received}) == 2:
                        break
            assert len({r.peer_port for r in upstream.received}) == 2
            workers = [pid for pid in _children(proc.pid) if "spawn_main" in _cmdline(pid)]
            assert len(workers) == 2
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                assert await proc.wait() == 0
            assert not [pid for pid in workers if _alive(pid)]
        finally:
            if proc.returncode is None:
                for pid in _children(proc.pid):
                    os.kill(pid, signal.SIGKILL)
                proc.kill()
                await proc.wait()


def test_a_worker_that_cannot_listen_stops_the_gateway(tmp_path: Path) -> None:
    """If the port is taken, the master says so in one line and the command fails."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
            ],
            env=_env(tmp_path, "http://127.0.0.1:9"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"gateway: cannot listen on 127.0.0.1:{port}: address already in use "
        "(another process serves it)"
    ]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""

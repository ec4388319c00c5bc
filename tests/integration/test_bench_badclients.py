"""The slow-client benchmark's bad clients (python -m bench.badclients) against real servers."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
REQUEST_LINE = b"GET /api/items?page=1 HTTP/1.1\r\n"


class Deadline(asyncio.Protocol):
    """A server with a head deadline: 408 to a connection that sent bytes, a close otherwise."""

    def __init__(self, seconds: float | None, heads: list[bytes]) -> None:
        self.seconds = seconds
        self.heads = heads
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.seconds is not None:
            asyncio.get_running_loop().call_later(self.seconds, self.expire)

    def data_received(self, data: bytes) -> None:
        self.buffer += data

    def expire(self) -> None:
        assert self.transport is not None
        if self.buffer:
            self.heads.append(self.buffer)
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
        self.transport.close()


async def run_bad_clients(seconds: float | None, *args: str) -> tuple[Any, list[bytes]]:
    heads: list[bytes] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Deadline(seconds, heads), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.badclients",
            str(port),
            "--nice=0",
            *args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    ready, report = (json.loads(line) for line in out.decode().splitlines())
    assert ready["ready"] == len(report["connections"])
    return report, heads


async def test_endings_and_lifetimes_are_recorded() -> None:
    """Idle connections closed by the server are plain closes, trickling ones get the 408."""
    report, heads = await run_bad_clients(
        0.6, "--idle=5", "--trickle=3", "--every=0.1", "--hold=10"
    )
    endings = {(kind, how) for kind, _, how in report["connections"]}
    assert endings == {("idle", "plain close"), ("trickling", "408 answer")}
    assert all(0.5 <= seconds < 3 for _, seconds, _ in report["connections"])
    assert report["wall"] < 5, "the run ends once the server has ended every connection"
    assert len(heads) == 3
    for head in heads:
        assert head.startswith(REQUEST_LINE)
        assert b"\r\n\r\n" not in head, "a trickling head is never finished"
        assert head.count(b"\r\n") >= 4, "a header line goes out every --every seconds"


async def test_connections_never_ended_are_reported_still_open() -> None:
    """A server that never closes leaves every connection still open when the hold is over."""
    report, _ = await run_bad_clients(None, "--idle=4", "--trickle=2", "--every=0.2", "--hold=1")
    assert len(report["connections"]) == 6
    assert {how for _, _, how in report["connections"]} == {"still open"}
    assert all(seconds >= 1 for _, seconds, _ in report["connections"])

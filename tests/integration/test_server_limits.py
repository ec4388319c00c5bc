"""Client deadlines and caps of aiohttp's server (gateway/server_limits.py), against a real
`gateway serve` process with `fast_data_plane: false`, over raw sockets.

Each test configures short values (half a second) and asserts generous correctness bounds:
the connection is closed, with the right answer, well before a bound several times the
configured value; never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.upstream import EchoUpstream, free_port

ROOT = Path(__file__).resolve().parents[2]
BOUND = 5.0  # seconds: far above every configured deadline below

POLICY = """
permissions:
  - {{name: t.read, title: Read}}
upstreams:
  main: {{url: "{main}", connect_timeout: 2, read_timeout: 5}}
routes:
  - {{path: /public/**, upstream: main, auth: none}}
"""

Start = Callable[..., Awaitable[int]]


@pytest.fixture(name="start")
async def start_fixture(tmp_path: Path) -> AsyncIterator[Start]:
    """Start `gateway serve` (aiohttp serving the public socket) with the given settings."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**settings: str) -> int:
            upstream = await stack.enter_async_context(EchoUpstream())
            policy = tmp_path / "policy.yaml"
            policy.write_text(POLICY.format(main=upstream.url))
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            env.update(
                {
                    "GATEWAY_MODE": "production",
                    "GATEWAY_SECRET": secrets.token_hex(32),
                    "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'keygate.db'}",
                    "GATEWAY_POLICY": str(policy),
                    "GATEWAY_DATA_DIR": str(tmp_path),
                    "GATEWAY_FAST_DATA_PLANE": "false",
                    "GATEWAY_LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(ROOT),
                }
            )
            env.update({"GATEWAY_" + name.upper(): value for name, value in settings.items()})
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{port}"),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )

            async def stop() -> None:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        async with asyncio.timeout(15):
                            await proc.wait()
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()

            stack.push_async_callback(stop)
            async with asyncio.timeout(30):
                while not (await _healthy(port)):
                    if proc.returncode is not None:
                        raise RuntimeError(f"gateway exited with {proc.returncode}")
                    await asyncio.sleep(0.1)
            return port

        yield start


async def _healthy(port: int) -> bool:
    with contextlib.suppress(OSError):
        answer = await exchange(
            port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        return answer.startswith(b"HTTP/1.1 200")
    return False


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection and read until the gateway closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(BOUND):
            return await reader.read()
    finally:
        writer.close()


async def read_until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes, and how long that took."""
    began = time.monotonic()
    async with asyncio.timeout(BOUND):
        data = await reader.read()
    return data, time.monotonic() - began


async def test_a_connection_that_sends_nothing_is_closed(start: Start) -> None:
    """A connection with no request is closed, without an answer, after client_header_timeout."""
    port = await start(client_header_timeout="0.5", keepalive_timeout="30")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data, seconds = await read_until_closed(reader)
    finally:
        writer.close()
    assert data == b""
    assert 0.3 < seconds < BOUND


async def test_a_trickled_head_gets_408_and_is_closed(start: Start) -> None:
    """A head still incomplete after client_header_timeout is answered 408, then closed."""
    port = await start(client_header_timeout="0.5", keepalive_timeout="30")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()

    async def trickle() -> None:
        writer.write(b"GET /public/x HTTP/1.1\r\nHost: t\r\n")
        for n in range(100):
            await asyncio.sleep(0.2)
            writer.write(b"X-Line-%d: 1\r\n" % n)

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(BOUND):
            data = await reader.read()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in data
    assert 0.3 < time.monotonic() - began < BOUND


async def test_an_idle_keepalive_connection_is_closed(start: Start) -> None:
    """After an answer, a connection idle for keepalive_timeout is closed."""
    port = await start(keepalive_timeout="0.5", client_header_timeout="30")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(BOUND):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.I)[1])  # type: ignore[index]
            await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200")
        data, seconds = await read_until_closed(reader)
    finally:
        writer.close()
    assert data == b""
    assert seconds < BOUND


async def test_a_stalled_request_body_is_closed(start: Start) -> None:
    """A body that sends nothing for client_body_timeout while the gateway waits is cut off."""
    port = await start(client_body_timeout="0.5", client_header_timeout="30")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /public/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        data, seconds = await read_until_closed(reader)
    finally:
        writer.close()
    assert not data.startswith(b"HTTP/1.1 2")
    assert 0.3 < seconds < BOUND


async def test_a_slow_but_steady_body_is_not_cut_off(start: Start) -> None:
    """client_body_timeout bounds the wait between two reads, not the whole upload."""
    port = await start(client_body_timeout="0.5")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /public/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
            b"Connection: close\r\n\r\n"
        )
        for n in range(10):  # 2 s in all: four times the timeout
            await asyncio.sleep(0.2)
            writer.write(str(n).encode())
        data, _ = await read_until_closed(reader)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert b'"body_size": 10' in data or b'"body_size":10' in data


async def test_connections_over_the_cap_are_closed_and_counted(start: Start) -> None:
    """With max_connections=5 the sixth connection is closed at once and counted in /metrics."""
    port = await start(max_connections="5", client_header_timeout="30", keepalive_timeout="30")
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
    try:
        await asyncio.sleep(0.3)  # all five accepted before the sixth arrives
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            data, seconds = await read_until_closed(reader)
        finally:
            writer.close()
        assert data == b""
        assert seconds < 2.0  # "at once": well before any configured deadline (30 s)
    finally:
        for _, w in held:
            w.close()
    metrics = b""
    async with asyncio.timeout(BOUND):
        while b"HTTP/1.1 200" not in metrics:  # the five closes reach the server first
            await asyncio.sleep(0.1)
            metrics = await exchange(
                port, b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
    assert re.search(
        rb'^keygate_connections_closed_total\{reason="max-connections"\} 1\.0$', metrics, re.M
    )
    assert re.search(rb"^keygate_open_connections 1\.0$", metrics, re.M)


async def test_more_header_fields_than_the_cap_get_431(start: Start) -> None:
    """A head with max_header_count fields is served; one more field is answered 431."""
    port = await start(max_header_count="100")

    def head(fields: int) -> bytes:
        lines = [b"GET /healthz HTTP/1.1", b"Host: t", b"Connection: close"]
        lines += [b"X-F%d: 1" % n for n in range(fields - 2)]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    assert (await exchange(port, head(100))).startswith(b"HTTP/1.1 200")
    # aiohttp answers head errors as HTTP/1.0: it could not read the version it would echo.
    assert re.match(rb"HTTP/1\.[01] 431 ", await exchange(port, head(101)))


async def test_handed_over_connections_keep_their_deadlines(start: Start) -> None:
    """Behind the fast front, aiohttp still closes a handed-over connection left idle, and one
    whose body stalls (the gateway's own paths are handed over)."""
    port = await start(fast_data_plane="true", keepalive_timeout="0.5", client_body_timeout="0.5")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(BOUND):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.I)[1])  # type: ignore[index]
            await reader.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200")
        data, _ = await read_until_closed(reader)
        assert data == b""
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: 100\r\n\r\nemail=a"
        )
        data, _ = await read_until_closed(reader)
    finally:
        writer.close()
    assert not data.startswith(b"HTTP/1.1 2")

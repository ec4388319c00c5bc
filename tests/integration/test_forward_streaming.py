"""Bodies in motion: large streams in bounded memory, stalls, early closes, the connection pool.

On aiohttp the gateway, the upstream and the client share this process, so the memory check
covers all three: streaming a few hundred MB through must not raise the process's peak RSS by
anything near that amount. Bodies are generated on the fly and only counted, never kept.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.gateways import MakeGateway
from tests.integration.upstream import (
    EchoUpstream,
    RawUpstream,
    download_upstream,
    generated,
    read_request_head,
)

TOTAL = 256 * 1024 * 1024  # bytes streamed each way
CHUNK = b"\xa5" * (1024 * 1024)
MAX_GROWTH_KB = 64 * 1024  # far below TOTAL: buffering the body would show at once


def _peak_rss_kb() -> int:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert match is not None
    return int(match.group(1))


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark for this process and return the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    match = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert match is not None
    return int(match.group(1))


def _generated(total: int) -> AsyncIterator[bytes]:
    return generated(total, CHUNK)


def _download_upstream() -> EchoUpstream:
    return download_upstream(TOTAL, CHUNK)


@pytest.mark.server(
    "aiohttp",
    reason="measures the peak RSS of this process, which holds the gateway only on aiohttp; "
    "test_front_server.py measures the front's own process",
)
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_large_download_streams_in_bounded_memory(
    make_gateway: MakeGateway, framing: str
) -> None:
    """A 256 MB download passes through complete without the process holding it in memory."""
    gw = await make_gateway(_download_upstream())
    before = _reset_peak_rss()
    received = 0
    async with gw.client.get(
        f"/api/download?framing={framing}", headers=gw.auth, timeout=aiohttp.ClientTimeout(60)
    ) as response:
        assert response.status == 200
        async for piece in response.content.iter_chunked(1024 * 1024):
            received += len(piece)
    assert received == TOTAL
    assert _peak_rss_kb() - before < MAX_GROWTH_KB


@pytest.mark.server(
    "aiohttp",
    reason="measures the peak RSS of this process, which holds the gateway only on aiohttp; "
    "test_front_server.py measures the front's own process",
)
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_large_upload_streams_in_bounded_memory(
    make_gateway: MakeGateway, framing: str
) -> None:
    """A 256 MB upload reaches the upstream complete without the process holding it in memory."""
    gw = await make_gateway()
    headers = dict(gw.auth)
    if framing == "length":
        headers["Content-Length"] = str(TOTAL)
    before = _reset_peak_rss()
    async with gw.client.post(
        "/api/upload",
        headers=headers,
        data=_generated(TOTAL),
        timeout=aiohttp.ClientTimeout(60),
    ) as response:
        assert response.status == 200
        assert (await response.json())["body_size"] == TOTAL
    assert _peak_rss_kb() - before < MAX_GROWTH_KB
    seen = gw.upstream.received[-1]
    if framing == "length":
        assert seen.header("Content-Length") == [str(TOTAL)]
    else:
        assert seen.header("Transfer-Encoding") == ["chunked"]


async def test_upstream_stalling_mid_body_aborts_the_response_only(
    make_gateway: MakeGateway,
) -> None:
    """A stall after the head cuts the client's response short; the gateway serves on."""

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100_000)
        await writer.drain()
        await asyncio.sleep(30)

    async with RawUpstream(stall) as raw:
        gw = await make_gateway(raw=raw)
        async with gw.client.get("/raw/big", headers=gw.auth) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        async with gw.client.get("/api/next", headers=gw.auth) as response:
            assert response.status == 200


async def test_upstream_closing_mid_body_truncates_visibly(make_gateway: MakeGateway) -> None:
    """An upstream that closes before its announced length gives the client a broken body."""

    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500000\r\n\r\n" + b"y" * 200_000)
        await writer.drain()

    async with RawUpstream(short) as raw:
        gw = await make_gateway(raw=raw)
        async with gw.client.get("/raw/big", headers=gw.auth) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        async with gw.client.get("/api/next", headers=gw.auth) as response:
            assert response.status == 200


async def test_close_delimited_upstream_body_is_relayed(make_gateway: MakeGateway) -> None:
    """A body without length or chunking ends at the upstream's close and arrives whole."""

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 300_000)
        await writer.drain()

    async with RawUpstream(until_close) as raw:
        gw = await make_gateway(raw=raw)
        for _ in range(2):  # the connection is not reused: the second request opens another
            async with gw.client.get("/raw/all", headers=gw.auth) as response:
                assert response.status == 200
                assert await response.read() == b"z" * 300_000
        assert raw.connections == 2


async def _serve_keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await read_request_head(reader)
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if length:
            await reader.readexactly(int(length.group(1)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def test_upstream_connections_are_reused(make_gateway: MakeGateway) -> None:
    """Sequential requests share one pooled keep-alive connection to the upstream."""
    async with RawUpstream(_serve_keep_alive) as raw:
        gw = await make_gateway(raw=raw)
        for i in range(5):
            async with gw.client.get(f"/raw/{i}", headers=gw.auth) as response:
                assert await response.read() == b"ok"
        assert raw.connections == 1


async def test_upstream_connection_close_is_honoured(make_gateway: MakeGateway) -> None:
    """After `Connection: close` from the upstream, the next request uses a new connection."""

    async def close_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(1)  # keep the socket open: the gateway must not wait for the close

    async with RawUpstream(close_each) as raw:
        gw = await make_gateway(raw=raw)
        for i in range(3):
            async with gw.client.get(f"/raw/{i}", headers=gw.auth) as response:
                assert await response.read() == b"ok"
        assert raw.connections == 3


def _closes_after_first_answer() -> tuple[list[bytes], RawUpstream]:
    """An upstream whose first connection answers once, then drops the next request unanswered
    (the race of an idle keep-alive connection closed by the upstream); later ones behave."""
    heads: list[bytes] = []

    async def conversation(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = raw.connections == 1
        heads.append(await read_request_head(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if first:
            heads.append(await read_request_head(reader))
            return  # close without answering
        await _serve_keep_alive(reader, writer)

    raw = RawUpstream(conversation)
    return heads, raw


async def test_idempotent_request_on_a_stale_connection_is_retried_once(
    make_gateway: MakeGateway,
) -> None:
    """A GET that meets a pooled connection the upstream just closed is retried on a new one."""
    heads, raw = _closes_after_first_answer()
    async with raw:
        gw = await make_gateway(raw=raw)
        for path in ("/raw/first", "/raw/second"):
            async with gw.client.get(path, headers=gw.auth) as response:
                assert response.status == 200
                assert await response.read() == b"ok"
        assert raw.connections == 2
        assert [h.split(b" ")[1] for h in heads] == [b"/raw/first", b"/raw/second", b"/raw/second"]


async def test_non_idempotent_request_on_a_stale_connection_is_not_retried(
    make_gateway: MakeGateway,
) -> None:
    """A POST that meets a dropped connection is answered 502, never sent twice."""
    heads, raw = _closes_after_first_answer()
    async with raw:
        gw = await make_gateway(raw=raw)
        async with gw.client.get("/raw/first", headers=gw.auth) as response:
            assert response.status == 200
        async with gw.client.post("/raw/pay", headers=gw.auth) as response:
            assert response.status == 502
            assert response.content_type == "application/problem+json"
        assert [h.split(b" ")[:2] for h in heads] == [
            [b"GET", b"/raw/first"],
            [b"POST", b"/raw/pay"],
        ]


async def test_client_leaving_mid_download_frees_the_upstream_connection(
    make_gateway: MakeGateway,
) -> None:
    """A client that disconnects mid-body leaves the gateway healthy for the next request."""
    gw = await make_gateway(_download_upstream())
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(f"GET /api/download HTTP/1.1\r\nHost: g\r\nX-API-KEY: {gw.key}\r\n\r\n".encode())
    await writer.drain()
    await reader.readexactly(1024 * 1024)
    writer.close()
    async with gw.client.get("/api/after", headers=gw.auth) as response:
        assert response.status == 200

"""`Expect: 100-continue` answered on the fast front itself, over raw sockets: `100 Continue`
only once the request is allowed, a refusal is the final answer and the connection closes with
the body never read; an allowed upload keeps the connection for the next request."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.gateways import MakeGateway

pytestmark = pytest.mark.server(
    "front", reason="the fast front's own answer; both servers' basics are in test_forwarding"
)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


def upload(key: str, length: int, *, version: str = "1.1") -> bytes:
    return (
        f"POST /api/upload HTTP/{version}\r\nHost: t\r\nX-API-KEY: {key}\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()


async def test_an_allowed_upload_is_invited_then_forwarded_and_the_connection_kept(
    make_gateway: MakeGateway,
) -> None:
    """The 100 arrives before any body byte is sent; the upstream gets the whole body and no
    Expect; the same connection then serves another request."""
    gw = await make_gateway()
    body = b"x" * 300_000
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(upload(gw.key, len(body)))
        assert await read_head(reader) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"connection: close" not in head.lower()
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(length), 5)
        writer.write(f"GET /api/next HTTP/1.1\r\nHost: t\r\nX-API-KEY: {gw.key}\r\n\r\n".encode())
        assert (await read_head(reader)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    first, second = gw.upstream.received[-2:]
    assert (first.target, first.body_size, first.header("Expect")) == ("/api/upload", 300_000, [])
    assert second.target == "/api/next"


async def test_a_refused_upload_gets_its_answer_and_a_close_never_a_100(
    make_gateway: MakeGateway,
) -> None:
    """A wrong key: 401 with `Connection: close` and no `100 Continue`; what the client sends
    after it (here a whole request posing as the body) is never read as a request and nothing
    reaches the upstream."""
    gw = await make_gateway()
    smuggled = f"GET /api/smuggled HTTP/1.1\r\nHost: t\r\nX-API-KEY: {gw.key}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(upload("apk_wrong", len(smuggled)))
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 401"), head
        assert b"connection: close" in head.lower()
        writer.write(smuggled)
        rest = await asyncio.wait_for(reader.read(), 5)  # then the connection ends
    finally:
        writer.close()
    assert b"HTTP/1.1" not in rest
    assert gw.upstream.received == []


async def test_a_refused_upload_by_permission_closes_too(make_gateway: MakeGateway) -> None:
    """A valid key without the route's permission: 403 and close, nothing forwarded."""
    gw = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(upload(gw.key, 5).replace(b"/api/upload", b"/admin/upload"))
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 403"), head
        assert await asyncio.wait_for(reader.read(), 5) != b"HTTP/1.1 100"
        assert reader.at_eof()
    finally:
        writer.close()
    assert gw.upstream.received == []


async def test_http10_expect_is_ignored(make_gateway: MakeGateway) -> None:
    """An HTTP/1.0 client's expectation is ignored (RFC 9110 §10.1.1): no 100, the body it
    sends at once is forwarded."""
    gw = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(upload(gw.key, 5, version="1.0") + b"hello")
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 200"), head
    finally:
        writer.close()
    assert gw.upstream.received[-1].body_size == 5


async def test_another_expectation_is_refused_with_417(make_gateway: MakeGateway) -> None:
    """An expectation the gateway does not know is answered 417, nothing forwarded."""
    gw = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(upload(gw.key, 5).replace(b"100-continue", b"200-ok"))
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 417"), head
    finally:
        writer.close()
    assert gw.upstream.received == []

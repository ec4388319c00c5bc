"""Behaviours of the fast front itself (`GATEWAY_FAST_DATA_PLANE=true`) against a real
`gateway serve` process: refusals as problem+json, malformed input, keep-alive, hand-over of
the gateway's own surfaces to the internal aiohttp listener, and streaming in bounded memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.gateways import Gateway as FrontGateway
from tests.integration.gateways import MakeGateway as MakeFront
from tests.integration.test_forwarding import request, split_responses
from tests.integration.upstream import EchoUpstream, RawUpstream, download_upstream, generated

pytestmark = pytest.mark.server("front", reason="behaviours of the fast front itself")

TOTAL = 100 * 1024 * 1024  # bytes streamed each way
CHUNK = b"\x5a" * (1024 * 1024)
MAX_GROWTH_KB = 48 * 1024  # far below TOTAL: buffering the body would show at once


def _problem(raw_body: bytes) -> dict[str, object]:
    body = json.loads(raw_body)
    assert isinstance(body, dict)
    return body


async def test_refusals_are_problem_json(make_gateway: MakeFront) -> None:
    """401, 403, 404 and 400 (bad target, duplicate credential) are problem+json, no-store."""
    gw: FrontGateway = await make_gateway()
    key = f"X-API-KEY: {gw.key}"
    raw = await gw.raw(
        request("/api/x")
        + request("/admin/x", key)
        + request("/nowhere")
        + request("/api/a%00b", key)
        + request("/api/x", key, f"Authorization: Bearer {gw.key}", close=True)
    )
    answers = split_responses(raw)
    assert [s for s, _, _ in answers] == [401, 403, 404, 400, 400]
    assert _problem(answers[0][2])["code"] == "credential-missing"
    for status, headers, body in answers:
        assert headers["content-type"] == "application/problem+json"
        assert headers["cache-control"] == "no-store"
        problem = _problem(body)
        assert problem["status"] == status
        assert str(problem["type"]).startswith("urn:keygate:problem:")
        assert gw.key not in body.decode()
    assert "www-authenticate" in answers[0][1]
    assert _problem(answers[0][2])["instance"] == "/api/x"
    assert gw.upstream.received == []


async def test_refusals_match_the_aiohttp_data_plane(make_gateway: MakeFront) -> None:
    """The front's problem bodies are the ones the aiohttp handler renders, byte for byte."""
    gw: FrontGateway = await make_gateway()
    key = f"X-API-KEY: {gw.key}"
    sent = [request("/api/x"), request("/admin/x", key), request("/nowhere")]
    # /healthz first makes the rest of this connection aiohttp's (hand-over): same requests.
    via_aiohttp = await gw.raw(request("/healthz") + b"".join(sent) + request("/x", close=True))
    via_front = await gw.raw(b"".join(sent) + request("/x", close=True))
    aiohttp_answers = split_responses(via_aiohttp)[1:]
    front_answers = split_responses(via_front)
    assert [(s, b) for s, _, b in front_answers] == [(s, b) for s, _, b in aiohttp_answers]


async def test_malformed_request_is_a_400_and_closes(make_gateway: MakeFront) -> None:
    """A request llhttp refuses gets 400 problem+json and the connection is closed."""
    gw: FrontGateway = await make_gateway()
    raw = await gw.raw(b"GET /api/x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    [(status, headers, body)] = split_responses(raw)
    assert status == 400
    assert headers["connection"] == "close"
    assert _problem(body)["status"] == 400


async def test_conflicting_framing_is_a_400(make_gateway: MakeFront) -> None:
    """Content-Length together with Transfer-Encoding (request smuggling) is refused."""
    gw: FrontGateway = await make_gateway()
    raw = await gw.raw(
        b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\n\r\n"
    )
    assert [s for s, _, _ in split_responses(raw)] == [400]
    assert gw.upstream.received == []


async def test_malformed_chunked_body_is_a_400(make_gateway: MakeFront) -> None:
    """A chunked request body with a bad chunk size ends in 400, never a 500."""
    gw: FrontGateway = await make_gateway()
    raw = await gw.raw(
        b"POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
    )
    [(status, _, _)] = split_responses(raw)
    assert status == 400


async def test_chunked_upload_is_forwarded_whole(make_gateway: MakeFront) -> None:
    """A chunked request body (with extensions and trailers) reaches the upstream de-chunked."""
    gw: FrontGateway = await make_gateway()
    raw = await gw.raw(
        b"POST /public/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        + request("/public/after", close=True)
    )
    answers = split_responses(raw)
    assert [s for s, _, _ in answers] == [200, 200]
    assert json.loads(answers[0][2])["body_size"] == 11
    assert [r.target for r in gw.upstream.received] == ["/public/up", "/public/after"]


async def test_refused_small_upload_keeps_the_connection_in_step(make_gateway: MakeFront) -> None:
    """A refused request's small unread body is read and dropped; the next request is served."""
    gw: FrontGateway = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        size = 16 * 1024  # within Limits.max_discard_bytes
        writer.write(b"POST /api/up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401 ")  # answered before the body was sent
        assert b"connection: close" not in head.lower()
        match = re.search(rb"(?i)content-length: (\d+)", head)
        assert match is not None
        await reader.readexactly(int(match.group(1)))
        writer.write(b"x" * size + request("/api/next", f"X-API-KEY: {gw.key}", close=True))
        rest = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    assert [s for s, _, _ in split_responses(rest)] == [200]
    assert [r.target for r in gw.upstream.received] == ["/api/next"]


async def test_refused_large_upload_is_answered_then_closed(make_gateway: MakeFront) -> None:
    """A refused request whose unread body is over the drain limit gets its answer with
    `Connection: close`, and the connection closes: no unbounded read-and-drop."""
    gw: FrontGateway = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        size = 200 * 1024 * 1024
        writer.write(b"POST /api/up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 401 ")
        assert b"connection: close" in head.lower()
        sent = 0
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(20):
                while sent < size:
                    writer.write(b"x" * (1024 * 1024))
                    await writer.drain()
                    sent += 1024 * 1024
    finally:
        writer.close()
    assert sent < size, "the gateway kept reading the refused body"
    assert gw.upstream.received == []


async def test_keep_alive_serves_1000_requests_on_one_connection(make_gateway: MakeFront) -> None:
    """One client connection carries 1000 sequential authorised requests, each answered."""
    gw: FrontGateway = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        for i in range(1000):
            writer.write(request(f"/api/n{i}", f"X-API-KEY: {gw.key}"))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            match = re.search(rb"(?i)content-length: (\d+)", head)
            assert match is not None
            await reader.readexactly(int(match.group(1)))
    finally:
        writer.close()
    assert len(gw.upstream.received) == 1000
    assert len({r.peer_port for r in gw.upstream.received}) <= 2  # upstream keep-alive too


async def test_a_long_pipeline_is_answered_in_order(make_gateway: MakeFront) -> None:
    """5000 pipelined requests in one write: 3000 refusals in a row (answered at once, without
    a task: one after another, not one inside another), then refusals and allowed requests
    (answered from the upstream connection's callback) interleaved. Every one is answered, in
    order, and the connection stays usable."""
    gw: FrontGateway = await make_gateway()
    ok = f"X-API-KEY: {gw.key}"
    plan = [(i >= 3000 and i % 50 == 0, f"/api/p{i}") for i in range(5000)]
    # A refusal the front can give at once: no route (404); decided without any lookup.
    data = b"".join(request(path if allowed else f"/nowhere{path}", ok) for allowed, path in plan)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(data + request("/api/last", ok, close=True))
        raw = await asyncio.wait_for(reader.read(-1), 60)
    finally:
        writer.close()
    statuses = [s for s, _, _ in split_responses(raw)]
    assert statuses == [200 if allowed else 404 for allowed, _ in plan] + [200]
    forwarded = [r.target for r in gw.upstream.received]
    assert forwarded == [path for allowed, path in plan if allowed] + ["/api/last"]


async def test_management_endpoint_works_through_the_hand_over(make_gateway: MakeFront) -> None:
    """/api/v1/api-keys/current answers with the key's record, after a data-plane request on
    the same connection (the hand-over happens mid-connection)."""
    gw: FrontGateway = await make_gateway()
    key = f"X-API-KEY: {gw.key}"
    raw = await gw.raw(
        request("/api/first", key)
        + request("/api/v1/api-keys/current", f"Authorization: token {gw.key}")
        + request("/healthz", close=True)
    )
    answers = split_responses(raw)
    assert [s for s, _, _ in answers] == [200, 200, 200]
    assert json.loads(answers[1][2])["label"] == "reader"  # Greenfield's shape, from aiohttp
    assert json.loads(answers[2][2]) == {"status": "ok"}
    assert [r.target for r in gw.upstream.received] == ["/api/first"]


async def test_gateway_paths_are_not_reachable_as_data_plane(make_gateway: MakeFront) -> None:
    """A percent-encoded spelling of a gateway path is still the gateway's, as with aiohttp."""
    gw: FrontGateway = await make_gateway()
    raw = await gw.raw(request("/%68ealthz", close=True))
    [(status, _, body)] = split_responses(raw)
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    assert gw.upstream.received == []


# -- streaming in bounded memory (of the gateway process) ---------------------------------------


def _reset_peak_rss(pid: int) -> int:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match is not None
    return int(match.group(1))


def _peak_rss_kb(pid: int) -> int:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match is not None
    return int(match.group(1))


def _generated(total: int) -> AsyncIterator[bytes]:
    return generated(total, CHUNK)


def _download_upstream() -> EchoUpstream:
    return download_upstream(TOTAL, CHUNK)


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_large_download_streams_in_bounded_memory(
    make_gateway: MakeFront, framing: str
) -> None:
    """A 100 MB download passes through whole, with its framing, without the gateway holding it."""
    gw: FrontGateway = await make_gateway(_download_upstream())
    before = _reset_peak_rss(gw.pid)
    received = 0
    async with gw.client.get(
        f"/api/download?framing={framing}", headers=gw.auth, timeout=aiohttp.ClientTimeout(60)
    ) as response:
        assert response.status == 200
        if framing == "chunked":
            assert response.headers["Transfer-Encoding"] == "chunked"
        else:
            assert response.headers["Content-Length"] == str(TOTAL)
        async for piece in response.content.iter_chunked(1024 * 1024):
            received += len(piece)
    assert received == TOTAL
    assert _peak_rss_kb(gw.pid) - before < MAX_GROWTH_KB


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_large_upload_streams_in_bounded_memory(
    make_gateway: MakeFront, framing: str
) -> None:
    """A 100 MB upload reaches the upstream whole without the gateway holding it in memory."""
    gw: FrontGateway = await make_gateway()
    headers = dict(gw.auth)
    if framing == "length":
        headers["Content-Length"] = str(TOTAL)
    before = _reset_peak_rss(gw.pid)
    async with gw.client.post(
        "/api/upload", headers=headers, data=_generated(TOTAL), timeout=aiohttp.ClientTimeout(60)
    ) as response:
        assert response.status == 200
        assert (await response.json())["body_size"] == TOTAL
    assert _peak_rss_kb(gw.pid) - before < MAX_GROWTH_KB
    seen = gw.upstream.received[-1]
    if framing == "length":
        assert seen.header("Content-Length") == [str(TOTAL)]
    else:
        assert seen.header("Transfer-Encoding") == ["chunked"]


async def test_access_log_has_a_line_per_request_and_never_the_key(
    make_gateway: MakeFront, tmp_path: Path
) -> None:
    """With `access_log` on, each data-plane request is one line in aiohttp's format."""
    log_file = tmp_path / "gateway.log"
    gw = await make_gateway(log_to=log_file, access_log=True, log_level="INFO")
    headers = {**gw.auth, "User-Agent": "probe/1.0", "Referer": "http://app.example/"}
    async with gw.client.get("/api/x?page=2", headers=headers) as response:
        assert response.status == 200
        body = await response.read()
    async with gw.client.get("/api/x", headers={"X-API-KEY": gw.key + "x"}) as response:
        assert response.status == 401
    allowed = re.compile(
        r'127\.0\.0\.1 \[[^]]+\] "GET /api/x\?page=2 HTTP/1\.1" 200 (\d+) '
        r'"http://app\.example/" "probe/1\.0"'
    )
    refused = re.compile(r'"GET /api/x HTTP/1\.1" 401 \d+ "-" "[^"]*"')
    for _ in range(200):  # the process writes its log lines as it goes: up to 10 s
        text = log_file.read_text()
        if allowed.search(text) and refused.search(text):
            break
        await asyncio.sleep(0.05)
    match = allowed.search(text)
    assert match is not None, text
    assert int(match.group(1)) == len(body)
    assert refused.search(text), text
    assert gw.key not in text


async def test_sigterm_lets_the_request_in_flight_finish(make_gateway: MakeFront) -> None:
    """On SIGTERM the front stops accepting, closes idle connections at once, answers the
    request in flight (with `Connection: close`) and then exits 0."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.6)  # within the raw upstream's 1 s read timeout
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        await writer.drain()

    async with RawUpstream(slow) as raw:
        gw: FrontGateway = await make_gateway(raw=raw)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", gw.port)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", gw.port)
        busy_writer.write(request("/raw/slow", f"X-API-KEY: {gw.key}"))
        await busy_writer.drain()
        await asyncio.sleep(0.2)  # the request is with the upstream now
        assert gw.process is not None
        gw.process.send_signal(signal.SIGTERM)  # to the master, which tells the worker
        try:
            async with asyncio.timeout(5):
                assert await idle_reader.read() == b""  # closed without waiting
                answer = await busy_reader.read()  # the answer, then the close
        finally:
            idle_writer.close()
            busy_writer.close()
        [(status, headers, body)] = split_responses(answer)
        assert (status, body) == (200, b"late")
        assert headers["connection"] == "close"
        async with asyncio.timeout(10):
            assert await gw.process.wait() == 0
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", gw.port)  # no longer listening

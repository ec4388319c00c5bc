"""Hostile clients, part two: targets, upgrades, re-routing headers, body and connection
limits, and every client-side deadline, against both servers.

Deadlines are set short here (0.5 s) so each is seen to fire; every socket wait in the tests
has a deadline of its own of a few seconds, so a gateway that does not enforce one fails the
test instead of holding the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

from tests.integration.gateways import Gateway, MakeGateway
from tests.integration.hostile import (
    Recorder,
    build,
    describe,
    exchange,
    forwarded,
    refused,
    run_table,
    statuses_in,
)
from tests.integration.upstream import download_upstream

MiB = 1024 * 1024
SHORT = 0.5  # seconds: client_header_timeout, client_body_timeout, keepalive_timeout
BOUND = 32 * MiB  # a gateway refusing a body may read this much of it (socket buffers), no more
WITHIN = 2.5  # a deadline of SHORT counts as enforced when the close comes within this


async def test_odd_request_targets_are_refused(make_gateway: MakeGateway) -> None:
    """Absolute-form, CONNECT, `OPTIONS *`, a target without `/`: refused, never forwarded."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        key, close = f"X-API-KEY: {gw.key}", "Connection: close"
        table = {
            "absolute-same-host": (
                build("GET", "http://gateway.test/raw/x", key, close),
                refused(400),
            ),
            "absolute-other-host": (
                build("GET", "http://evil.example/raw/x", key, close),
                refused(400),
            ),
            "absolute-to-the-upstream": (
                build("GET", f"http://127.0.0.1:{recorder.server.port}/raw/x", key, close),
                refused(400),
            ),
            "connect": (
                build(
                    "CONNECT", "evil.example:443", "Host: evil.example:443", key, close, host=False
                ),
                refused(400, 405, 501),
            ),
            "options-asterisk": (build("OPTIONS", "*", key, close), refused(400, 404, 405, 501)),
            "no-leading-slash": (build("GET", "raw/x", key, close), refused(400)),
        }
        failures = await run_table(gw, recorder, table)
        assert not failures, describe(failures)


async def test_upgrades_on_a_plain_route_stay_plain_http(make_gateway: MakeGateway) -> None:
    """Upgrade h2c/websocket on a plain route: forwarded without it, no 101, still HTTP/1.1."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        key = f"X-API-KEY: {gw.key}"
        upgrades = {
            "h2c": (
                "Connection: Upgrade, HTTP2-Settings",
                "Upgrade: h2c",
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            ),
            "websocket": (
                "Connection: Upgrade",
                "Upgrade: websocket",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            ),
        }
        failures = {}
        for name, headers in upgrades.items():
            then = build("GET", "/raw/after", key, "Connection: close")
            got = await exchange(gw, recorder, build("GET", "/raw/up", key, *headers) + then)
            # Ignoring the upgrade, the connection goes on as HTTP/1.1: the next request is
            # served, or the connection ends after the first answer. Never silence.
            both = (got.statuses, got.upstream) == ([200, 200], ["GET /raw/up", "GET /raw/after"])
            first = (got.statuses, got.upstream) == ([200], ["GET /raw/up"])
            if not got.closed or not (both or first):
                failures[name] = (
                    f"statuses {got.statuses}, closed {got.closed}, upstream {got.upstream}"
                )
                continue
            seen = recorder.seen[0]
            passed = {n.lower() for n, _ in seen.headers} & {"upgrade", "http2-settings"}
            connection = ",".join(seen.header("Connection")).lower()
            if passed or "upgrade" in connection:
                failures[name] = f"upstream got {sorted(passed)}, Connection: {connection!r}"
        assert not failures, describe(failures)


REROUTING = (
    "X-Original-URL: /admin/users",
    "X-Rewrite-URL: /admin/users",
    "X-HTTP-Method-Override: DELETE",
    "X-Forwarded-Uri: /admin/users",
    "X-Envoy-Original-Path: /admin/users",
    "SCRIPT_NAME: /admin",
    "x-original-url: /admin/users",
    "X_Rewrite_URL: /admin/users",
    "x-http-method-override: DELETE",
)


async def test_rerouting_headers_never_reach_the_upstream(make_gateway: MakeGateway) -> None:
    """Re-routing and re-method headers are removed; the request itself is forwarded."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        data = build(
            "POST",
            "/raw/r",
            f"X-API-KEY: {gw.key}",
            *REROUTING,
            "Content-Length: 2",
            "Connection: close",
            body=b"{}",
        )
        got = await exchange(gw, recorder, data)
        assert forwarded("POST", "/raw/r").verdict(got) == "ok", got
        names = {n.lower().replace("_", "-") for n, _ in recorder.seen[0].headers}
        sent = {line.split(":")[0].lower().replace("_", "-") for line in REROUTING}
        assert names & sent == set()
        assert recorder.seen[0].header("X-Gateway-User") == [gw.user_id]
        assert recorder.seen[0].body == b"{}"


async def _stream_body(gw: Gateway, head: bytes, piece: bytes, total: int) -> tuple[int, bytes]:
    """Send `head`, then `piece` until `total` bytes, the gateway closes, or it stops reading
    for 2 s; the bytes sent and what the gateway answered (until its close, or 5 s). Sending
    stops past BOUND too: that much read is already a failure, the rest would only be time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    answer = bytearray()

    async def read() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                answer.extend(chunk)

    reading = asyncio.ensure_future(read())
    sent = 0
    try:
        writer.write(head)
        with contextlib.suppress(TimeoutError, ConnectionError):
            while sent < min(total, BOUND + len(piece)) and not reading.done():
                writer.write(piece)
                async with asyncio.timeout(2):
                    await writer.drain()
                sent += len(piece)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await reading
        return sent, bytes(answer) + (b"" if reading.done() else b"<open>")
    finally:
        reading.cancel()
        writer.close()


async def test_oversized_management_body_is_a_413_and_a_close(make_gateway: MakeGateway) -> None:
    """Over max_body_bytes on /v1/apikeys: 413, then a close within 32 MiB of 200, not a drain."""
    # A refused management request (a wrong key: 401) must not drain the body either.
    gw = await make_gateway(permissions=("unrestricted",))
    total = 200 * MiB
    typ = "Content-Type: application/json"
    piece = b" " * MiB
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    length, chunked = f"Content-Length: {total}", "Transfer-Encoding: chunked"
    manager = f"X-API-KEY: {gw.key}"
    cases = {
        "declared-length": (manager, length, piece, 413),
        "chunked": (manager, chunked, chunk, 413),
        "refused-declared-length": ("X-API-KEY: apk_wrong", length, piece, 401),
    }
    failures = {}
    for name, (key, framing, body, status) in cases.items():
        head = build("POST", "/v1/apikeys", key, typ, framing)
        sent, answer = await _stream_body(gw, head, body, total)
        if statuses_in(answer)[:1] != [status] or answer.endswith(b"<open>") or sent > BOUND:
            failures[name] = f"answer {answer[:40]!r}..{answer[-10:]!r}, {sent // MiB} MiB sent"
    assert not failures, describe(failures)
    assert gw.upstream.received == []


async def _until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """What arrives until the gateway closes (or 3 s pass: then b"<open>"), and when."""
    start, data = time.monotonic(), b""
    try:
        async with asyncio.timeout(3):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        data += b"<open>"
    except ConnectionError:
        pass
    return data, time.monotonic() - start


async def _silent(gw: Gateway) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        data, took = await _until_closed(reader)
    finally:
        writer.close()
    ok = data == b"" or statuses_in(data) == [408]
    return "ok" if ok and took < WITHIN else f"got {data[:30]!r} after {took:.1f}s"


async def _trickling_head(gw: Gateway) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

    async def trickle() -> None:
        writer.write(f"GET /raw/x HTTP/1.1\r\nHost: g\r\nX-API-KEY: {gw.key}\r\n".encode())
        with contextlib.suppress(ConnectionError):
            for i in range(40):  # a field every 0.1 s: each arrives well within any deadline
                await asyncio.sleep(0.1)
                writer.write(b"X-T%d: 1\r\n" % i)

    trickling = asyncio.ensure_future(trickle())
    try:
        data, took = await _until_closed(reader)
    finally:
        trickling.cancel()
        writer.close()
    ok = statuses_in(data) == [408] and not data.endswith(b"<open>")
    return "ok" if ok and took < WITHIN else f"got {data[:30]!r} after {took:.1f}s"


async def _stalled_body(gw: Gateway) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(
            build("POST", "/raw/slow", f"X-API-KEY: {gw.key}", "Content-Length: 100") + b"x" * 10
        )
        data, took = await _until_closed(reader)
    finally:
        writer.close()
    ok = statuses_in(data) in ([], [408]) and not data.endswith(b"<open>")
    return "ok" if ok and took < WITHIN else f"got {data[:30]!r} after {took:.1f}s"


async def _idle_keep_alive(gw: Gateway) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(build("GET", "/raw/idle", f"X-API-KEY: {gw.key}"))
        async with asyncio.timeout(3):
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)  # the recorder's "ok"
        data, took = await _until_closed(reader)
    finally:
        writer.close()
    ok = statuses_in(head) == [200] and data == b""
    return (
        "ok" if ok and took < WITHIN else f"got {head[:15]!r}, then {data[:30]!r} after {took:.1f}s"
    )


async def test_every_client_wait_has_a_deadline(make_gateway: MakeGateway) -> None:
    """Silent, trickling-head (408), stalled-body and idle keep-alive connections are closed."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(
            raw=recorder.server,
            client_header_timeout=SHORT,
            client_body_timeout=SHORT,
            keepalive_timeout=SHORT,
        )
        scenarios = {
            "silent-connection": _silent(gw),
            "trickling-head": _trickling_head(gw),
            "stalled-body": _stalled_body(gw),
            "idle-keep-alive": _idle_keep_alive(gw),
        }
        verdicts = dict(zip(scenarios, await asyncio.gather(*scenarios.values()), strict=True))
        failures = {name: v for name, v in verdicts.items() if v != "ok"}
        assert not failures, describe(failures)
        assert recorder.summary() == ["GET /raw/idle"]


async def test_connections_beyond_max_connections_are_closed_at_once(
    make_gateway: MakeGateway,
) -> None:
    """With max_connections 5 open, a sixth is closed at once; when one ends, one is served."""
    recorder = Recorder()
    async with recorder.server, contextlib.AsyncExitStack() as stack:
        gw = await make_gateway(raw=recorder.server, max_connections=5)
        get = build("GET", "/raw/c", f"X-API-KEY: {gw.key}")

        async def served() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            stack.callback(writer.close)
            writer.write(get)
            async with asyncio.timeout(3):
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
            assert statuses_in(head) == [200]
            return reader, writer

        held = [await served() for _ in range(5)]
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        stack.callback(writer.close)
        with contextlib.suppress(ConnectionError):
            writer.write(get)
        data, took = await _until_closed(reader)
        assert (data, took < 1.0) == (b"", True), (data[:40], took)
        held[0][1].close()
        await asyncio.sleep(0.3)
        await served()


async def test_clients_resetting_mid_download_leave_the_gateway_serving(
    make_gateway: MakeGateway,
) -> None:
    """Clients resetting (RST) mid-download, three times over, leave the gateway serving."""
    gw = await make_gateway(download_upstream(64 * MiB, b"\x5a" * MiB))
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(build("GET", "/api/download", f"X-API-KEY: {gw.key}"))
        async with asyncio.timeout(5):
            await reader.readexactly(MiB)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await asyncio.sleep(0.1)
    got = await exchange(
        gw, None, build("GET", "/api/after", f"X-API-KEY: {gw.key}", "Connection: close")
    )
    assert got.statuses == [200], got
    if gw.process is not None:
        assert gw.process.returncode is None

"""Hostile clients, part one: request framing and head syntax (RFC 9112), against both servers.

Every attack is sent on a fresh raw connection; the table says what the client must get and
what the upstream must receive: nothing, or exactly one request. The rules are RFC 9112's
strict side, as nginx applies them: an ambiguous length, a malformed head or an unknown
version is refused before anything is forwarded, and the connection is closed after it.
"""

from __future__ import annotations

import asyncio

from tests.integration.gateways import MakeGateway
from tests.integration.hostile import (
    Expect,
    Recorder,
    build,
    describe,
    exchange,
    forwarded,
    refused,
    run_table,
)

HELLO = b"5\r\nhello\r\n0\r\n\r\n"
# Behind the body: a request the gateway must never see as one (the key would let it pass).
SMUGGLED = "GET /raw/smuggled HTTP/1.1\r\nHost: gateway.test\r\nX-API-KEY: {key}\r\n\r\n"


def post(*headers: str, body: bytes, target: str = "/raw/te", key: str) -> bytes:
    return build("POST", target, f"X-API-KEY: {key}", *headers, "Connection: close", body=body)


async def test_ambiguous_request_lengths_are_refused(make_gateway: MakeGateway) -> None:
    """CL with TE, two lengths, a coding not ending in `chunked`: 400 (or 501), nothing up."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        k = gw.key
        smuggle = SMUGGLED.format(key=k).encode()
        cl_te = HELLO + smuggle
        table = {
            "cl-then-te": (
                post(
                    f"Content-Length: {len(HELLO)}", "Transfer-Encoding: chunked", body=cl_te, key=k
                ),
                refused(400),
            ),
            "te-then-cl": (
                post(
                    "Transfer-Encoding: chunked", f"Content-Length: {len(cl_te)}", body=cl_te, key=k
                ),
                refused(400),
            ),
            "two-lengths": (
                post("Content-Length: 5", "Content-Length: 6", body=b"hello!", key=k),
                refused(400),
            ),
            "same-length-twice": (
                post("Content-Length: 5", "Content-Length: 5", body=b"hello", key=k),
                refused(400),
            ),
            "length-list": (post("Content-Length: 5, 5", body=b"hello", key=k), refused(400)),
            "signed-length": (post("Content-Length: +5", body=b"hello", key=k), refused(400)),
            "xchunked": (post("Transfer-Encoding: xchunked", body=HELLO, key=k), refused(400, 501)),
            "chunked-then-identity": (
                post("Transfer-Encoding: chunked, identity", body=HELLO, key=k),
                refused(400, 501),
            ),
            "chunked-twice-listed": (
                post(
                    "Transfer-Encoding: chunked", "Transfer-Encoding: identity", body=HELLO, key=k
                ),
                refused(400, 501),
            ),
            "space-before-colon": (
                post("Transfer-Encoding : chunked", body=HELLO, key=k),
                refused(400),
            ),
            "tab-before-colon": (
                post("Transfer-Encoding\t: chunked", body=HELLO, key=k),
                refused(400),
            ),
            "folded-te-line": (
                post("X-A: 1", " Transfer-Encoding: chunked", body=HELLO, key=k),
                refused(400),
            ),
            "xchunked-with-length": (
                post("Content-Length: 5", "Transfer-Encoding: xchunked", body=HELLO, key=k),
                refused(400, 501),
            ),
            "upper-case-with-length": (
                post("Content-Length: 5", "Transfer-Encoding: CHUNKED", body=HELLO, key=k),
                refused(400),
            ),
            "tab-value-with-length": (
                post("Content-Length: 5", "Transfer-Encoding:\tchunked", body=HELLO, key=k),
                refused(400),
            ),
        }
        failures = await run_table(gw, recorder, table)
        assert not failures, describe(failures)


async def test_legal_spellings_of_chunked_are_decoded(make_gateway: MakeGateway) -> None:
    """`CHUNKED`, `chunked` after spaces or a tab (OWS) are chunked: one request, body decoded."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        table = {
            name: (post(line, body=HELLO, key=gw.key), forwarded("POST", "/raw/te"))
            for name, line in {
                "upper-case": "Transfer-Encoding: CHUNKED",
                "leading-spaces": "Transfer-Encoding:   chunked",
                "leading-tab": "Transfer-Encoding:\tchunked",
            }.items()
        }
        failures = {}
        for name, (data, expect) in table.items():
            got = await exchange(gw, recorder, data)
            verdict = expect.verdict(got)
            if verdict == "ok" and recorder.seen[0].body != b"hello":
                verdict = f"upstream body {recorder.seen[0].body!r}"
            if verdict != "ok":
                failures[name] = verdict
        assert not failures, describe(failures)


async def test_malformed_chunks_are_refused(make_gateway: MakeGateway) -> None:
    """Overflowing, negative, non-hex chunk sizes, a bare LF in an extension: 400 and close."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        bodies = {
            "size-overflow": b"10000000000000000\r\nhello\r\n0\r\n\r\n",
            "size-overflow-long": b"f" * 40 + b"\r\nhello\r\n0\r\n\r\n",
            "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
            "non-hex-size": b"zz\r\nhello\r\n0\r\n\r\n",
            "0x-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
            "empty-size": b"\r\nhello\r\n0\r\n\r\n",
            "lf-in-extension": b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            "bare-lf-after-size": b"5\nhello\r\n0\r\n\r\n",
            "data-longer-than-size": b"3\r\nhello\r\n0\r\n\r\n",
        }
        # The head may already be on its way upstream when the body turns out bad (bodies are
        # streamed): what must never happen is a whole request there, or anything but a 400.
        expect = Expect((400,), upstream_may_start=True)
        table = {
            name: (post("Transfer-Encoding: chunked", body=body, key=gw.key), expect)
            for name, body in bodies.items()
        }
        failures = await run_table(gw, recorder, table)
        assert not failures, describe(failures)


async def test_a_refused_requests_body_is_never_a_request(make_gateway: MakeGateway) -> None:
    """A request smuggled in a refused (401) request's body never reaches the upstream."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        smuggle = SMUGGLED.format(key=gw.key).encode()
        last = build("GET", "/raw/last", f"X-API-KEY: {gw.key}", "Connection: close")
        chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggle), smuggle)
        table = {
            "length-body": build("POST", "/raw/x", f"Content-Length: {len(smuggle)}", body=smuggle),
            "chunked-body": build("POST", "/raw/x", "Transfer-Encoding: chunked", body=chunk),
            "get-with-body": build(
                "GET", "/raw/x", f"Content-Length: {len(smuggle)}", body=smuggle
            ),
        }
        failures = {}
        for name, data in table.items():
            got = await exchange(gw, recorder, data + last)
            # Either the body is read and dropped and the next request served, or the
            # connection ends after the 401: both are sound; the smuggled one never passes.
            if got.statuses not in ([401], [401, 200]) or not got.closed:
                failures[name] = f"statuses {got.statuses}, closed {got.closed}"
            elif got.upstream != ["GET /raw/last"][: len(got.statuses) - 1]:
                failures[name] = f"upstream got {got.upstream}"
        assert not failures, describe(failures)


async def test_expect_continue_on_a_refused_request_gets_no_100(make_gateway: MakeGateway) -> None:
    """`Expect: 100-continue` without a key: 401 first, never `100 Continue`, nothing up."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        for target in ("/raw/upload", "/api/upload"):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            try:
                writer.write(
                    build("POST", target, "Content-Length: 5", "Expect: 100-continue")
                )  # the body is held back, as a waiting client does
                async with asyncio.timeout(3):
                    first = await reader.readline()
            finally:
                writer.close()
            assert first.startswith(b"HTTP/1.1 401 "), (target, first)
        assert recorder.started == 0
        assert gw.upstream.received == []


async def test_malformed_heads_are_refused(make_gateway: MakeGateway) -> None:
    """No Host, two, bare LF, obs-fold, HTTP/0.9, HTTP/2+: 400 (505), close, nothing up."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)
        key = f"X-API-KEY: {gw.key}"
        table = {
            "no-host": (build("GET", "/raw/x", key, host=False), refused(400)),
            "two-hosts": (build("GET", "/raw/x", key, "Host: other.test"), refused(400)),
            "empty-and-real-host": (
                build("GET", "/raw/x", "Host:", key, "Host: gateway.test", host=False),
                refused(400),
            ),
            "bare-lf": (build("GET", "/raw/x", key, eol="\n"), refused(400)),
            "bare-lf-mixed": (
                f"GET /raw/x HTTP/1.1\r\nHost: gateway.test\n{key}\r\n\r\n".encode(),
                refused(400),
            ),
            "bare-cr": (
                f"GET /raw/x HTTP/1.1\r\nHost: gateway.test\r{key}\r\n\r\n".encode(),
                refused(400),
            ),
            "obs-fold": (build("GET", "/raw/x", key, "X-Folded: a", " b"), refused(400)),
            "http-0.9": (b"GET /raw/x\r\n", refused(400, 505)),
            "http-2.0": (build("GET", "/raw/x", key, version="HTTP/2.0"), refused(505, 400)),
            "http-3.0": (build("GET", "/raw/x", key, version="HTTP/3.0"), refused(505, 400)),
            "h2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", refused(505, 400)),
            "lower-case-version": (build("GET", "/raw/x", key, version="http/1.1"), refused(400)),
            "space-in-name": (build("GET", "/raw/x", key, "Bad Name: x"), refused(400)),
            "nul-in-value": (build("GET", "/raw/x", key, "X-Nul: a\x00b"), refused(400)),
        }
        failures = await run_table(gw, recorder, table)
        assert not failures, describe(failures)


async def test_header_count_is_capped(make_gateway: MakeGateway) -> None:
    """100 header fields are served; 101, 500 and 3,000 are a 431 and nothing goes up."""
    recorder = Recorder()
    async with recorder.server:
        gw = await make_gateway(raw=recorder.server)

        def with_fields(total: int) -> bytes:
            # Host, the key and Connection are three of the `total`.
            extra = [f"X-F{i}: {i}" for i in range(total - 3)]
            return build("GET", "/raw/h", f"X-API-KEY: {gw.key}", *extra, "Connection: close")

        table = {
            "100": (with_fields(100), forwarded("GET", "/raw/h")),
            "101": (with_fields(101), refused(431)),
            "500": (with_fields(500), refused(431)),
            "3000": (with_fields(3000), refused(431)),
        }
        failures = await run_table(gw, recorder, table)
        assert not failures, describe(failures)

"""Forwarding through the gateway to a real upstream: what the upstream sees, what the client gets.

Each test runs against both servers (tests/integration/gateways.py): aiohttp's in this process
and the fast front in a `gateway serve` process, on real ports; the upstreams are real servers
on free ports (tests/integration/upstream.py). Raw sockets are used wherever an HTTP client
library would normalise what we want to send (dot segments, pipelining).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import socket

import aiohttp
import pytest
from aiohttp import web

from tests.integration.gateways import MakeGateway
from tests.integration.upstream import EchoUpstream, RawUpstream


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Consecutive HTTP/1.1 responses (Content-Length framed) from raw bytes."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, data[:length]))
        data = data[length:]
    return out


def request(target: str, *headers: str, close: bool = False) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: gateway.test", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- what reaches the upstream ------------------------------------------------------------------


async def test_canonical_path_and_verbatim_query_reach_the_upstream(
    make_gateway: MakeGateway,
) -> None:
    """The upstream receives the canonical path and the query byte for byte."""
    gw = await make_gateway()
    raw = await gw.raw(
        request(
            "/api/./a/%41b/../c?q=%2F%2e&x=1+2&x=%E2%82%AC&empty=",
            f"X-API-KEY: {gw.key}",
            close=True,
        )
    )
    [(status, _, _)] = split_responses(raw)
    assert status == 200
    assert gw.upstream.received[-1].target == "/api/a/c?q=%2F%2e&x=1+2&x=%E2%82%AC&empty="


async def test_identity_headers_name_the_user_key_and_permissions(
    make_gateway: MakeGateway,
) -> None:
    """X-Gateway-User, X-Gateway-Key-Id and X-Gateway-Permissions carry the verified identity."""
    gw = await make_gateway()
    async with gw.client.get("/api/x", headers=gw.auth) as response:
        assert response.status == 200
    seen = gw.upstream.received[-1]
    assert seen.header("X-Gateway-User") == [gw.user_id]
    assert seen.header("X-Gateway-Key-Id") == [gw.key_id]
    assert seen.header("X-Gateway-Permissions") == ["t.read"]
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header("X-Forwarded-Proto") == ["http"]
    assert seen.header("X-Forwarded-Host") == [f"127.0.0.1:{gw.port}"]
    assert seen.header("Host") == [f"127.0.0.1:{gw.upstream.port}"]


async def test_outcomes_are_counted_in_metrics(make_gateway: MakeGateway) -> None:
    """/metrics counts data-plane requests by route template, status class and outcome:
    allowed, and each refusal's code."""

    async def counts() -> dict[str, float]:
        async with gw.client.get("/metrics") as response:
            assert response.status == 200
            text = await response.text()
        found = re.findall(
            r'^keygate_requests_total\{method="GET",outcome="([^"]+)",route="/api/\*\*",'
            r'status="(\dxx)"\} (\S+)$',
            text,
            re.M,
        )
        return {f"{outcome} {status}": float(value) for outcome, status, value in found}

    gw = await make_gateway()
    before = await counts()
    for _ in range(3):
        async with gw.client.get("/api/x", headers=gw.auth) as response:
            assert response.status == 200
    async with gw.client.get("/api/x") as response:
        assert response.status == 401
    after = await counts()
    assert after["allowed 2xx"] - before.get("allowed 2xx", 0) == 3
    assert after["credential-missing 4xx"] - before.get("credential-missing 4xx", 0) == 1


async def test_connection_header_cannot_drop_the_gateways_headers(
    make_gateway: MakeGateway,
) -> None:
    """`Connection: X-Gateway-User, X-Forwarded-For` leaves the gateway's own values in place."""
    gw = await make_gateway()
    raw = await gw.raw(
        request(
            "/api/x",
            f"X-API-KEY: {gw.key}",
            "X-Gateway-User: admin",
            "X-Private: 1",
            "Connection: X-Gateway-User, X-Gateway-Permissions, X-Forwarded-For, X-Private",
        )
        + request("/api/y", f"X-API-KEY: {gw.key}", close=True)
    )
    assert [s for s, _, _ in split_responses(raw)] == [200, 200]
    seen = gw.upstream.received[0]
    assert seen.header("X-Gateway-User") == [gw.user_id]
    assert seen.header("X-Gateway-Permissions") == ["t.read"]
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header("X-Private") == []


async def test_spoofed_identity_and_forwarding_headers_never_reach_the_upstream(
    make_gateway: MakeGateway,
) -> None:
    """Client-made X-Gateway-*, `_` spellings, X-Forwarded-*, Forwarded, X-Real-IP are replaced."""
    gw = await make_gateway()
    raw = await gw.raw(
        request(
            "/api/x",
            f"X-API-KEY: {gw.key}",
            "X-Gateway-User: admin",
            "x_gateway_user: admin",
            "X_Gateway-Key-Id: apk_someone",
            "X-Gateway-Permissions: unrestricted",
            "X-Forwarded-For: 10.9.9.9",
            "X_Forwarded_For: 10.9.9.9",
            "X-Forwarded-Host: evil.example",
            "Forwarded: for=10.9.9.9",
            "X-Real-IP: 10.9.9.9",
            close=True,
        )
    )
    assert split_responses(raw)[0][0] == 200
    seen = gw.upstream.received[-1]
    identity = [(n, v) for n, v in seen.headers if n.lower().replace("_", "-").startswith("x-gat")]
    assert identity == [
        ("X-Gateway-User", gw.user_id),
        ("X-Gateway-Key-Id", gw.key_id),
        ("X-Gateway-Permissions", "t.read"),
    ]
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header("X-Forwarded-Host") == ["gateway.test"]
    assert not {"forwarded", "x-real-ip", "x_forwarded_for"} & {n.lower() for n in seen.names()}


async def test_rerouting_and_underscore_headers_never_reach_the_upstream(
    make_gateway: MakeGateway,
) -> None:
    """X-Original-URL, method overrides, `_` names and configured names are dropped, even from
    a trusted proxy; the request line is what the upstream serves."""
    import ipaddress

    gw = await make_gateway(
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),),
        strip_request_headers=("x-debug-as",),
    )
    rerouting = [
        "X-Original-URL: /admin/users",
        "X-Rewrite-URL: /admin/users",
        "X-Original-Method: DELETE",
        "X-HTTP-Method-Override: DELETE",
        "X-HTTP-Method: DELETE",
        "X-Method-Override: DELETE",
        "X-Forwarded-Uri: /admin/users",
        "X-Forwarded-Path: /admin/users",
        "X-Forwarded-Prefix: /admin",
        "X-Envoy-Original-Path: /admin/users",
        "x-original-url: /admin/users",
        "SCRIPT_NAME: /admin",
        "Path_Info: /users",
        "X-Debug-As: root",
    ]
    raw = await gw.raw(
        request("/api/x", f"X-API-KEY: {gw.key}", *rerouting, "X-Trace: 7", close=True)
    )
    assert split_responses(raw)[0][0] == 200
    seen = gw.upstream.received[-1]
    sent = {line.partition(":")[0].lower() for line in rerouting}
    assert not sent & {n.lower() for n in seen.names()}
    assert not [n for n in seen.names() if "_" in n]
    assert seen.header("X-Trace") == ["7"]
    assert seen.target == "/api/x"


async def test_trusted_proxy_forwarded_for_is_appended(make_gateway: MakeGateway) -> None:
    """Behind a configured trusted proxy, its X-Forwarded-For is kept and the peer appended."""
    import ipaddress

    gw = await make_gateway(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    async with gw.client.get(
        "/api/x", headers={**gw.auth, "X-Forwarded-For": "198.51.100.4"}
    ) as response:
        assert response.status == 200
    assert gw.upstream.received[-1].header("X-Forwarded-For") == ["198.51.100.4, 127.0.0.1"]


@pytest.mark.parametrize(
    "credential",
    [
        {"X-API-KEY": "{key}"},
        {"Authorization": "Bearer {key}"},
        {"Authorization": "token {key}"},
    ],
)
async def test_credential_never_reaches_the_upstream_on_protected_routes(
    make_gateway: MakeGateway, credential: dict[str, str]
) -> None:
    """The key a request was authorised with is removed before forwarding."""
    gw = await make_gateway()
    headers = {k: v.format(key=gw.key) for k, v in credential.items()}
    async with gw.client.get("/api/x", headers=headers) as response:
        assert response.status == 200
    seen = gw.upstream.received[-1]
    assert not any(gw.key in value for _, value in seen.headers)
    assert seen.header("Authorization") == []
    assert seen.header("X-API-KEY") == []


async def test_credential_never_reaches_the_upstream_on_public_routes(
    make_gateway: MakeGateway,
) -> None:
    """A public (`auth: none`) route does not leak a key or password the client happened to send."""
    gw = await make_gateway()
    raw = await gw.raw(
        request(
            "/public/page",
            f"X-API-KEY: {gw.key}",
            f"x_api_key: {gw.key}",
            "Authorization: Basic cmVhZGVyQGV4YW1wbGUuY29tOnNlY3JldA==",
            "X-Gateway-User: admin",
            close=True,
        )
    )
    assert split_responses(raw)[0][0] == 200
    seen = gw.upstream.received[-1]
    assert not any(gw.key in v or "cmVhZGVy" in v for _, v in seen.headers)
    assert not [n for n in seen.names() if n.lower().replace("_", "-").startswith("x-gateway")]


# -- attacks on one connection ------------------------------------------------------------------


async def test_pipelined_attack_requests_are_refused_independently(
    make_gateway: MakeGateway,
) -> None:
    """On one keep-alive connection, an allowed request does not open the door for the next ones."""
    gw = await make_gateway()
    key = f"X-API-KEY: {gw.key}"
    raw = await gw.raw(
        request("/api/ok", key)
        + request("/api/%2e%2e/admin/users", key)  # traversal into a route the key lacks
        + request("/api/..%2fadmin/users", key)  # encoded slash: refused outright
        + request("/admin/users", key)  # plainly unauthorised
        + request("/api/fine", "X-Gateway-User: admin")  # no key at all
        + request("/api/last", key, close=True)
    )
    statuses = [status for status, _, _ in split_responses(raw)]
    assert statuses == [200, 403, 400, 403, 401, 200]
    assert [r.target for r in gw.upstream.received] == ["/api/ok", "/api/last"]


async def test_each_request_on_a_connection_is_authenticated_afresh(
    make_gateway: MakeGateway,
) -> None:
    """A key sent on the first request of a connection is not remembered for the second."""
    gw = await make_gateway()
    raw = await gw.raw(
        request("/api/one", f"X-API-KEY: {gw.key}") + request("/api/two", close=True)
    )
    assert [s for s, _, _ in split_responses(raw)] == [200, 401]
    assert [r.target for r in gw.upstream.received] == ["/api/one"]


@pytest.mark.server(
    "front",
    reason="aiohttp closes the connection at the client's EOF and drops the answer in flight",
)
async def test_a_client_that_half_closes_still_gets_its_answers(
    make_gateway: MakeGateway,
) -> None:
    """A request sent, then the sending side shut (FIN): the answer still arrives whole.

    The front holds small answers until the end of the loop's pass (outbox.py); the EOF must
    not close the connection under a held answer. Pipelined requests after the one in flight
    are not answered once the client has shut its side."""
    gw = await make_gateway()
    for headers in ([f"X-API-KEY: {gw.key}"], []):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(request("/api/one", *headers))
            writer.write_eof()
            async with asyncio.timeout(10):
                raw = await reader.read()
        finally:
            writer.close()
        [(status, _, body)] = split_responses(raw)
        assert status == (200 if headers else 401)
        assert body
    assert [r.target for r in gw.upstream.received] == ["/api/one"]


# -- what comes back --------------------------------------------------------------------------


async def test_upstream_redirect_is_passed_back_not_followed(make_gateway: MakeGateway) -> None:
    """A 302 to another host reaches the client as is; the gateway never follows it."""
    upstream = EchoUpstream()

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://elsewhere.invalid/steal"})

    upstream.route("GET", "/api/redirect", redirect)
    gw = await make_gateway(upstream)
    async with gw.client.get("/api/redirect", headers=gw.auth, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "http://elsewhere.invalid/steal"
    assert [r.target for r in upstream.received] == ["/api/redirect"]


async def test_upstream_cookies_reach_the_client_but_are_never_replayed(
    make_gateway: MakeGateway,
) -> None:
    """Set-Cookie is passed to the client; the gateway keeps no jar, so others never send it."""
    upstream = EchoUpstream()

    async def set_cookie(request: web.Request) -> web.Response:
        response = web.Response(text="ok")
        response.headers.add("Set-Cookie", "session=first-client; Path=/")
        response.headers.add("Set-Cookie", "theme=dark; Path=/")
        return response

    upstream.route("GET", "/api/login", set_cookie)
    gw = await make_gateway(upstream)
    async with gw.client.get("/api/login", headers=gw.auth) as response:
        assert response.status == 200
        assert response.headers.getall("Set-Cookie") == [
            "session=first-client; Path=/",
            "theme=dark; Path=/",
        ]
    # Another client, without a cookie jar of its own.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other,
        other.get(f"http://127.0.0.1:{gw.port}/api/next", headers=gw.auth) as response,
    ):
        assert response.status == 200
    assert upstream.received[-1].header("Cookie") == []


async def test_head_and_no_content_responses_have_no_body(make_gateway: MakeGateway) -> None:
    """HEAD keeps the upstream's Content-Length without a body; 204 and 304 have none either."""
    upstream = EchoUpstream()

    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def not_modified(request: web.Request) -> web.Response:
        return web.Response(status=304, headers={"ETag": '"v1"'})

    upstream.route("GET", "/api/empty", no_content)
    upstream.route("GET", "/api/cached", not_modified)
    gw = await make_gateway(upstream)
    raw = await gw.raw(
        b"HEAD /api/x HTTP/1.1\r\nHost: g\r\nX-API-KEY: "
        + gw.key.encode()
        + b"\r\n\r\n"
        + request("/api/empty", f"X-API-KEY: {gw.key}")
        + request("/api/cached", f"X-API-KEY: {gw.key}")
        + request("/api/after", f"X-API-KEY: {gw.key}", close=True)
    )
    head, rest = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert (
        int(dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])["Content-Length"])
        > 0
    )
    statuses = [s for s, _, _ in split_responses(rest)]
    assert statuses == [204, 304, 200]
    assert [r.method for r in upstream.received[:1]] == ["HEAD"]


async def test_chunked_upstream_response_is_relayed(make_gateway: MakeGateway) -> None:
    """A chunked upstream body arrives complete and in order."""
    upstream = EchoUpstream()

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(50):
            await response.write(f"part {i};".encode())
        await response.write_eof()
        return response

    upstream.route("GET", "/api/chunked", chunked)
    gw = await make_gateway(upstream)
    async with gw.client.get("/api/chunked", headers=gw.auth) as response:
        assert response.status == 200
        assert await response.text() == "".join(f"part {i};" for i in range(50))


async def test_compressed_bodies_pass_through_untouched(make_gateway: MakeGateway) -> None:
    """A gzip body keeps its bytes and Content-Encoding: the gateway never decompresses."""
    payload = gzip.compress(b'{"hello": "world"}' * 100)
    upstream = EchoUpstream()

    async def compressed(request: web.Request) -> web.Response:
        return web.Response(
            body=payload,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    upstream.route("GET", "/api/gz", compressed)
    gw = await make_gateway(upstream)
    raw = await gw.raw(request("/api/gz", f"X-API-KEY: {gw.key}", close=True))
    [(status, headers, body)] = split_responses(raw)
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert body == payload


async def test_expect_continue_upload_is_forwarded_without_expect(
    make_gateway: MakeGateway,
) -> None:
    """`Expect: 100-continue` is answered by the gateway; the upstream gets the body, no Expect."""
    gw = await make_gateway()
    async with gw.client.post(
        "/api/upload", headers=gw.auth, data=b"x" * 5000, expect100=True
    ) as response:
        assert response.status == 200
        assert (await response.json())["body_size"] == 5000
    assert gw.upstream.received[-1].header("Expect") == []


async def test_non_websocket_route_forwards_upgrade_as_plain_http(
    make_gateway: MakeGateway,
) -> None:
    """Without `websocket: true` the Upgrade header is dropped and the request is plain HTTP."""
    gw = await make_gateway()
    raw = await gw.raw(
        request(
            "/nows/feed",
            f"X-API-KEY: {gw.key}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            close=True,
        )
    )
    assert split_responses(raw)[0][0] == 200
    seen = gw.upstream.received[-1]
    assert seen.header("Upgrade") == []
    assert seen.header("Connection") in ([], ["keep-alive"])


# -- upstream failures ------------------------------------------------------------------------


async def test_upstream_refusing_connections_is_a_502_problem(make_gateway: MakeGateway) -> None:
    """A refused upstream connection answers 502 problem+json, never a 500."""
    gw = await make_gateway()
    async with gw.client.get("/dead/x", headers=gw.auth) as response:
        assert response.status == 502
        assert response.content_type == "application/problem+json"
        body = json.loads(await response.text())
    assert body["status"] == 502
    assert body["code"] == "bad-gateway"


async def expect_timeout_problem(response: aiohttp.ClientResponse) -> None:
    """The answer is the gateway's 504 problem+json."""
    assert response.status == 504
    assert response.content_type == "application/problem+json"
    assert json.loads(await response.text())["code"] == "gateway-timeout"


async def test_upstream_not_answering_in_time_is_a_504_problem(make_gateway: MakeGateway) -> None:
    """An upstream that accepts the request but never answers yields 504 problem+json."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    async with RawUpstream(silent) as raw:
        gw = await make_gateway(raw=raw)
        async with gw.client.get("/raw/x", headers=gw.auth) as response:
            await expect_timeout_problem(response)
        async with gw.client.get("/api/still-fine", headers=gw.auth) as response:
            assert response.status == 200


async def test_slow_answer_on_a_reused_connection_is_relayed_whole(
    make_gateway: MakeGateway,
) -> None:
    """An answer whose body comes after its head, on a pooled connection, is relayed whole
    (the fast front hands such an answer from the connection's callback to a task)."""

    async def once_then_slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nsec")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"ond-answer")
        await reader.readuntil(b"\r\n\r\n")  # the connection is reused for a third
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthird")
        await asyncio.sleep(30)

    async with RawUpstream(once_then_slow) as raw:
        gw = await make_gateway(raw=raw)
        bodies = []
        for path in ("/raw/1", "/raw/2", "/raw/3"):
            async with gw.client.get(path, headers=gw.auth) as response:
                assert response.status == 200
                bodies.append(await response.read())
        assert bodies == [b"first", b"second-answer", b"third"]
        assert raw.connections == 1


async def test_upstream_stalling_on_a_reused_connection_is_a_504(
    make_gateway: MakeGateway,
) -> None:
    """The read timeout holds for a request sent on a pooled keep-alive connection too (the
    fast front answers those from the connection's callback, not from a waiting task)."""

    async def once_then_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    async with RawUpstream(once_then_silent) as raw:
        gw = await make_gateway(raw=raw)
        async with gw.client.get("/raw/first", headers=gw.auth) as response:
            assert response.status == 200
            assert await response.read() == b"first"
        async with gw.client.get("/raw/second", headers=gw.auth) as response:
            await expect_timeout_problem(response)
        assert raw.connections == 1  # the second request went out on the pooled connection


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Split: a\rb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ],
    ids=[
        "length-and-chunked",
        "conflicting-lengths",
        "repeated-length",
        "listed-length",
        "status-below-100",
        "control-char",
        "negative-length",
        "hex-length",
        "unknown-coding",
        "obs-fold",
        "space-in-name",
        "bare-lf",
        "bare-cr",
        "not-http1",
        "bad-chunk-size",
    ],
)
async def test_ambiguous_upstream_framing_is_a_502(
    make_gateway: MakeGateway, answer: bytes
) -> None:
    """A response the gateway could frame differently than the upstream meant is refused (502)."""

    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(5)

    async with RawUpstream(bad) as raw:
        gw = await make_gateway(raw=raw)
        async with gw.client.get("/raw/x", headers=gw.auth) as response:
            if response.status == 200:  # a bad chunk is only seen after the head went out
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
            else:
                assert response.status == 502
                assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("upstream_date", [b"Tue, 01 Jan 2030 00:00:00 GMT", None])
async def test_response_carries_exactly_one_date(
    make_gateway: MakeGateway, upstream_date: bytes | None
) -> None:
    """The upstream's Date is relayed as is; without one the gateway adds its own. Never two."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            date = b"Date: " + upstream_date + b"\r\n" if upstream_date else b""
            writer.write(b"HTTP/1.1 200 OK\r\n" + date + b"Content-Length: 2\r\n\r\nok")
            await writer.drain()

    async with RawUpstream(answer) as raw:
        gw = await make_gateway(raw=raw)
        async with gw.client.get("/raw/x", headers=gw.auth) as response:
            assert response.status == 200
            assert await response.read() == b"ok"
            dates = response.headers.getall("Date")
    assert len(dates) == 1
    if upstream_date:
        assert dates[0] == upstream_date.decode()
    else:
        assert dates[0].endswith(" GMT")


async def test_upstream_not_accepting_connections_is_a_504(make_gateway: MakeGateway) -> None:
    """A connect that does not complete within connect_timeout answers 504 problem+json."""
    # A listening socket whose accept queue is full: the kernel drops further SYNs, so a
    # connect neither succeeds nor is refused.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            gw = await make_gateway(unaccepting=port)
            async with gw.client.get("/unaccepting/x", headers=gw.auth) as response:
                assert response.status == 504
                assert response.content_type == "application/problem+json"
                assert "accept a connection" in json.loads(await response.text())["detail"]
        finally:
            for filler in fillers:
                filler.close()


async def test_full_connection_pool_answers_504_after_waiting(make_gateway: MakeGateway) -> None:
    """With every pooled connection busy past connect_timeout, a request gets 504, not a hang."""
    arrived, answer = asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        arrived.set()
        await answer.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with RawUpstream(slow) as raw:
        gw = await make_gateway(raw=raw)
        first = asyncio.ensure_future(gw.client.get("/tiny/first", headers=gw.auth))
        async with asyncio.timeout(10):
            await arrived.wait()  # the one connection of `tiny` is now taken
        async with gw.client.get("/tiny/second", headers=gw.auth) as response:
            assert response.status == 504
            assert "no upstream connection became free" in (await response.json())["detail"]
        answer.set()
        async with await first as response:
            assert response.status == 200
        assert raw.connections == 1


async def test_expect_continue_is_not_sent_to_a_refused_client(
    make_gateway: MakeGateway,
) -> None:
    """A client waiting for `100 Continue` with a wrong key gets the 401 first, never an
    invitation to upload; with a good key it gets 100 Continue, then the upstream's answer."""
    gw = await make_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(
            b"POST /api/upload HTTP/1.1\r\nHost: t\r\nX-API-KEY: apk_wrong\r\n"
            b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        first = await asyncio.wait_for(reader.readline(), 5)
        assert first.startswith(b"HTTP/1.1 401"), first
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(
            b"POST /api/upload HTTP/1.1\r\nHost: t\r\nX-API-KEY: "
            + gw.key.encode()
            + b"\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        first = await asyncio.wait_for(reader.readline(), 5)
        assert first.startswith(b"HTTP/1.1 100"), first
        writer.write(b"hello")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"\r\n"  # end of the 100
        final = await asyncio.wait_for(reader.readline(), 5)
        assert final.startswith(b"HTTP/1.1 200"), final
    finally:
        writer.close()
    assert gw.upstream.received[-1].header("Expect") == []

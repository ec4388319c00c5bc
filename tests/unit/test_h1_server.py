"""The server side of the HTTP/1.1 core (gateway.proxy.h1.server), rule by rule: strict heads,
framing and limits, no sockets (the request cycle: test_h1_server_cycle.py)."""

from __future__ import annotations

import pytest

from gateway.proxy.h1.errors import (
    BadChunk,
    HeadTooLarge,
    MalformedMessage,
    ProtocolError,
    TooManyFields,
    UnsupportedVersion,
)
from gateway.proxy.h1.limits import Limits
from gateway.proxy.h1.request_head import CONTINUE
from gateway.proxy.h1.server import (
    CLOSED,
    END_OF_BODY,
    NEED_DATA,
    PAUSED,
    ServerConnection,
)
from tests.unit.h1_support import HOST, TE, feed, head_of, req, take

REFUSED = [
    # Host
    (req(), MalformedMessage),
    (req(HOST, b"host: b"), MalformedMessage),
    (req(HOST, b"HOST: a"), MalformedMessage),
    # line ends: a bare LF or CR is never a line end
    (b"GET / HTTP/1.1\nHost: a\r\n\r\n", MalformedMessage),
    (b"GET / HTTP/1.1\r\nHost: a\n\r\n", MalformedMessage),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\n", MalformedMessage),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n", MalformedMessage),
    (b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", MalformedMessage),
    (b"\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", MalformedMessage),
    (b"GET / HTTP/1.1\rHost: a\r\n\r\n", MalformedMessage),
    (b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", MalformedMessage),
    # obs-fold
    (req(HOST, b"X: a", b" b"), MalformedMessage),
    (req(HOST, b"X: a", b"\tb"), MalformedMessage),
    (req(b" Host: a"), MalformedMessage),
    # the request line
    (b"GET /\r\n\r\n", MalformedMessage),  # HTTP/0.9
    (b"GET /\r\n", MalformedMessage),  # HTTP/0.9 as its client sends it: no blank line
    (req(HOST, line=b"GET  / HTTP/1.1"), MalformedMessage),
    (req(HOST, line=b"GET / HTTP/1.1 "), MalformedMessage),
    (req(HOST, line=b" GET / HTTP/1.1"), MalformedMessage),
    (req(HOST, line=b"GET\t/ HTTP/1.1"), MalformedMessage),
    (req(HOST, line=b"GET /a b HTTP/1.1"), MalformedMessage),
    (req(HOST, line=b"GET / http/1.1"), MalformedMessage),
    (req(HOST, line=b"GET / HTTPS/1.1"), MalformedMessage),
    (req(HOST, line=b"get / HTTP/1.1"), MalformedMessage),
    (req(HOST, line=b"GET /\x7f HTTP/1.1"), MalformedMessage),
    # versions
    (req(HOST, line=b"GET / HTTP/2.0"), UnsupportedVersion),
    (req(HOST, line=b"GET / HTTP/2"), UnsupportedVersion),
    (req(HOST, line=b"GET / HTTP/1.2"), UnsupportedVersion),
    (req(HOST, line=b"GET / HTTP/1.10"), UnsupportedVersion),
    (req(HOST, line=b"GET / HTTP/0.9"), UnsupportedVersion),
    (b"GET / HTTP/3.0\r\n", UnsupportedVersion),  # judged as soon as the line is whole
    # fields
    (req(HOST, b"X : a"), MalformedMessage),
    (req(HOST, b": a"), MalformedMessage),
    (req(HOST, b"X"), MalformedMessage),
    (req(HOST, b"X: a\x00b"), MalformedMessage),
    (req(HOST, b"X: a\x7fb"), MalformedMessage),
    # Content-Length
    (req(HOST, b"Content-Length: 3", TE, body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, TE, b"Content-Length: 3", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Content-Length: 3", b"Content-Length: 3", body=b"abc"), MalformedMessage),
    (req(HOST, b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"), MalformedMessage),
    (req(HOST, b"Content-Length: 3, 3", body=b"abc"), MalformedMessage),
    (req(HOST, b"Content-Length: +3", body=b"abc"), MalformedMessage),
    (req(HOST, b"Content-Length: -1"), MalformedMessage),
    (req(HOST, b"Content-Length: 0x3", body=b"abc"), MalformedMessage),
    (req(HOST, b"Content-Length: 3a", body=b"abc"), MalformedMessage),
    (req(HOST, b"Content-Length: 99999999999999999999999"), MalformedMessage),
    # Transfer-Encoding: only chunked, once, and not in HTTP/1.0
    (req(HOST, b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: chunkedx", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: chun ked", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: chun\tked", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, TE, TE, body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: gzip", TE, body=b"0\r\n\r\n"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding: identity"), MalformedMessage),
    (req(HOST, b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"), MalformedMessage),
    (req(TE, line=b"POST / HTTP/1.0", body=b"0\r\n\r\n"), MalformedMessage),
    (
        req(b"Transfer-Encoding: CHUNKED", line=b"POST / HTTP/1.0", body=b"0\r\n\r\n"),
        MalformedMessage,
    ),
    # chunk framing, after a good head
    (req(HOST, TE, body=b"5;a\nb\r\nhello\r\n0\r\n\r\n"), BadChunk),
    (req(HOST, TE, body=b"5\nhello\r\n0\r\n\r\n"), BadChunk),
    (req(HOST, TE, body=b"-5\r\nhello\r\n0\r\n\r\n"), BadChunk),
    (req(HOST, TE, body=b"0x5\r\nhello\r\n0\r\n\r\n"), BadChunk),
    (req(HOST, TE, body=b"z\r\n"), BadChunk),
    (req(HOST, TE, body=b"10000000000000000\r\n"), BadChunk),  # 17 digits: over 64 bits
    (req(HOST, TE, body=b"5\r\nhelloXX0\r\n\r\n"), BadChunk),
]


@pytest.mark.parametrize(("data", "error"), REFUSED)
def test_refused(data: bytes, error: type[ProtocolError]) -> None:
    """Each strictness rule: the bytes raise exactly this ProtocolError (whole or byte by
    byte), never NEED_DATA forever, and the connection is then closed."""
    conn, events = feed(data)
    assert events[-1] is error, events
    assert conn.closed
    assert not conn.can_keep_alive
    assert conn.next_event() is CLOSED
    conn = ServerConnection()
    events = []
    for i in range(len(data)):
        conn.receive(data[i : i + 1])
        events += take(conn)
        if conn.closed:
            break
    assert events[-1] is error, events


ACCEPTED = [
    (req(HOST, b"Transfer-Encoding: CHUNKED", body=b"0\r\n\r\n"), b""),  # codings are case-blind
    (req(HOST, b"Transfer-Encoding: Chunked", body=b"0\r\n\r\n"), b""),
    (req(HOST, b"Transfer-Encoding:  chunked", body=b"0\r\n\r\n"), b""),  # OWS is not the value
    (req(HOST, b"Transfer-Encoding:\tchunked", body=b"0\r\n\r\n"), b""),
    (req(HOST, b"Transfer-Encoding: chunked ", body=b"3\r\nabc\r\n0\r\n\r\n"), b"abc"),
    (req(HOST, b"Content-Length: 003", body=b"abc"), b"abc"),
    (req(HOST, b"Content-Length:  3 ", body=b"abc"), b"abc"),
    (req(HOST, b"Content-Length: 0"), None),
    (b"\r\n\r\n" + req(HOST), None),  # empty lines before a request are ignored
    (req(HOST, line=b"OPTIONS * HTTP/1.1"), None),
    (req(HOST, line=b"GET http://a/x?y HTTP/1.1"), None),
    (req(line=b"GET / HTTP/1.0"), None),  # HTTP/1.0 needs no Host
    (req(HOST, b"X: \x80\xff"), None),  # obs-text in a value
    (req(HOST, b"X:"), None),
]


@pytest.mark.parametrize(("data", "body"), ACCEPTED)
def test_accepted(data: bytes, body: bytes | None) -> None:
    """Legal variations are accepted, with the body they frame."""
    _, events = feed(data)
    head_of(events)
    if body is None:
        assert events[1:] == [PAUSED]
    else:
        pieces = [e for e in events if isinstance(e, bytes)]
        assert b"".join(pieces) == body
        assert events[-2:] == [END_OF_BODY, PAUSED]


def test_the_head_as_parsed() -> None:
    """Method, target, headers in order with their case, framing and the noted values; a
    value's surrounding whitespace is not part of it."""
    data = req(
        b"host: example.org",
        b"X-API-KEY: k1 ",
        b"Authorization:\tBearer t\t",
        b"x-api-key: k2",
        b"Content-Length: 2",
        b"Expect: 100-continue",
        line=b"POST /p?q=1 HTTP/1.1",
        body=b"hi",
    )
    head = head_of(feed(data)[1])
    assert (head.method, head.target, head.host) == ("POST", "/p?q=1", "example.org")
    assert head.headers == [
        ("host", "example.org"),
        ("X-API-KEY", "k1"),
        ("Authorization", "Bearer t"),
        ("x-api-key", "k2"),
        ("Content-Length", "2"),
        ("Expect", "100-continue"),
    ]
    assert head.api_keys == ["k1", "k2"] == head.values("X-Api-Key")
    assert head.authorization == ["Bearer t"] == head.values("authorization")
    assert head.values("CONTENT-LENGTH") == ["2"]
    assert (head.length, head.chunked, head.expect, head.has_body) == (2, False, CONTINUE, True)
    assert head.keep_alive
    assert not head.upgrade


@pytest.mark.parametrize(
    ("line", "fields", "expect"),
    [
        (b"POST / HTTP/1.1", [b"Expect: 100-Continue"], CONTINUE),
        (b"POST / HTTP/1.1", [], None),
        (b"POST / HTTP/1.1", [b"Expect: 200-ok"], "200-ok"),
        (b"POST / HTTP/1.1", [b"Expect: 100-continue", b"Expect: x"], "x"),
        (b"POST / HTTP/1.0", [b"Expect: 100-continue"], None),  # RFC 9110 10.1.1: ignored
    ],
)
def test_the_expectation_as_noted(line: bytes, fields: list[bytes], expect: str | None) -> None:
    """`100-continue` in any case is the one expectation noted as such; another is kept as
    sent (answered 417); an HTTP/1.0 request's is ignored."""
    data = req(HOST, b"Content-Length: 1", *fields, line=line, body=b"x")
    assert head_of(feed(data)[1]).expect == expect


@pytest.mark.parametrize(
    ("data", "upgrade"),
    [
        (req(HOST, b"Upgrade: websocket", b"Connection: upgrade"), True),
        (req(HOST, line=b"CONNECT a:443 HTTP/1.1"), True),
        (req(HOST, b"Upgrade: websocket"), False),  # without Connection: upgrade, just a field
    ],
)
def test_upgrade_and_connect_are_flagged(data: bytes, upgrade: bool) -> None:
    """Upgrade requests and CONNECT are flagged (the front hands them over)."""
    assert head_of(feed(data)[1]).upgrade is upgrade


# -- limits ----------------------------------------------------------------------------------

SMALL = Limits(max_head_bytes=200, max_request_line=40, max_header_line=30, max_header_count=5)


def fields(n: int) -> list[bytes]:
    return [HOST] + [b"X-%d: v" % i for i in range(n - 1)]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (req(*fields(5)), None),
        (req(*fields(6)), TooManyFields),
        (req(*fields(6))[:-2], TooManyFields),  # while the head is still incomplete
        (b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 6, TooManyFields),
        (req(HOST, line=b"GET /" + b"a" * 26 + b" HTTP/1.1"), None),  # 40 bytes
        (req(HOST, line=b"GET /" + b"a" * 27 + b" HTTP/1.1"), HeadTooLarge),
        (b"GET /" + b"a" * 36, HeadTooLarge),  # incomplete: 41 bytes and no line end yet
        (req(HOST, b"X-Long: " + b"v" * 24), None),  # name + value: 30 bytes
        (req(HOST, b"X-Long: " + b"v" * 25), HeadTooLarge),
        (req(HOST, b"X-Long: " + b"v" * 24 + b"  "), None),  # OWS is not part of the value
        (req(HOST, b"X-A: " + b"v" * 20, b"X-B: " + b"v" * 20, b"X-C: " + b"v" * 20), None),
    ],
)
def test_limits(data: bytes, error: type[ProtocolError] | None) -> None:
    """Field count, request line and field line caps: exact at the limit, refused one over,
    and refused while the head is incomplete once it cannot fit."""
    _, events = feed(data, limits=SMALL)
    if error is None:
        head_of(events)
    else:
        assert events == [error]


def test_head_size_limit_is_exact() -> None:
    """A head of exactly max_head_bytes passes, one byte more is refused, complete or not."""
    limits = Limits(max_head_bytes=100)
    base = req(HOST, b"X: ")
    fits = req(HOST, b"X: " + b"v" * (100 - len(base)))
    assert len(fits) == 100
    head_of(feed(fits, limits=limits)[1])
    over = req(HOST, b"X: " + b"v" * (101 - len(base)))
    assert feed(over, limits=limits)[1] == [HeadTooLarge]
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX: "
    assert feed(start.ljust(101, b"v"), limits=limits)[1] == [HeadTooLarge]  # not complete yet
    assert feed(start.ljust(100, b"v"), limits=limits)[1] == [NEED_DATA]


def test_request_line_limit_does_not_count_a_lone_cr() -> None:
    """A request line of exactly max_request_line bytes whose CR arrives without its LF waits."""
    line = b"GET /" + b"a" * 26 + b" HTTP/1.1"
    conn = ServerConnection(SMALL)
    conn.receive(line + b"\r")
    assert take(conn) == [NEED_DATA]
    conn.receive(b"\nHost: a\r\n\r\n")
    head_of(take(conn))

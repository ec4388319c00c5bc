"""The server side of the HTTP/1.1 core (gateway.proxy.h1.server), rule by rule: strict heads,
framing, limits, pipelining and keep-alive, EOF, detach and the client deadline, no sockets."""

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
from gateway.proxy.h1.server import (
    BODY,
    CLOSED,
    END_OF_BODY,
    HEADER,
    IDLE,
    NEED_DATA,
    PAUSED,
    RequestHead,
    ServerConnection,
)
from tests.unit.h1_support import GET, feed, take


def head_of(events: list[object]) -> RequestHead:
    assert isinstance(events[0], RequestHead), events
    return events[0]


def req(*fields: bytes, line: bytes = b"GET / HTTP/1.1", body: bytes = b"") -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


HOST = b"Host: a"
TE = b"Transfer-Encoding: chunked"

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
    assert (head.length, head.chunked, head.expect, head.has_body) == (2, False, True, True)
    assert head.keep_alive
    assert not head.upgrade


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


# -- pipelining and keep-alive ---------------------------------------------------------------


def test_a_pipelined_request_waits_until_the_first_is_answered() -> None:
    """After a head, PAUSED (however often asked) until `answered`; then the next request."""
    second = req(HOST, line=b"GET /2 HTTP/1.1")
    conn, events = feed(GET + second)
    assert head_of(events).target == "/"
    assert events[1:] == [PAUSED]
    assert take(conn) == [PAUSED]
    assert conn.buffered == len(second)
    assert conn.answered(True) is True
    events = take(conn)
    assert head_of(events).target == "/2"
    assert events[1:] == [PAUSED]


def test_answered_false_closes() -> None:
    """`answered(False)` closes: CLOSED from then on, nothing pipelined is served, bytes are
    ignored."""
    conn, _ = feed(GET + GET)
    assert conn.answered(False) is False
    assert conn.closed
    conn.receive(GET)
    assert take(conn) == [CLOSED]


@pytest.mark.parametrize(
    ("data", "keep"),
    [
        (req(HOST), True),
        (req(HOST, b"Connection: close"), False),
        (req(HOST, b"Connection: Close"), False),
        (req(HOST, b"Connection: keep-alive, close"), False),
        (req(line=b"GET / HTTP/1.0"), False),
        (req(b"Connection: keep-alive", line=b"GET / HTTP/1.0"), True),
        (req(b"Connection: close", line=b"GET / HTTP/1.0"), False),
    ],
)
def test_keep_alive_follows_version_and_connection(data: bytes, keep: bool) -> None:
    """HTTP/1.1 keeps alive unless `Connection: close`; HTTP/1.0 only with keep-alive."""
    conn, events = feed(data + GET)
    assert head_of(events).keep_alive is keep
    assert conn.can_keep_alive is keep
    assert conn.answered(True) is keep
    assert take(conn)[0] is CLOSED if not keep else isinstance(take(conn)[0], RequestHead)


def test_eof_on_a_new_or_idle_connection_closes() -> None:
    """EOF before any byte, between requests, or after empty lines, is a clean CLOSED."""
    assert feed(b"", eof=True)[1] == [CLOSED]
    assert feed(b"\r\n", eof=True)[1] == [CLOSED]
    conn, _ = feed(GET)
    conn.answered(True)
    conn.receive_eof()
    assert take(conn) == [CLOSED]


def test_eof_in_a_partial_head_closes_without_an_answer() -> None:
    """A head cut short by EOF is nothing to answer: CLOSED."""
    for cut in (1, 10, len(GET) - 1):
        assert feed(GET[:cut], eof=True)[1] == [CLOSED]


@pytest.mark.parametrize(
    "data",
    [
        req(HOST, b"Content-Length: 5", body=b"abc"),
        req(HOST, TE, body=b"5\r\nabc"),
        req(HOST, TE, body=b"5\r"),  # no body byte yet: the size line is cut
        req(HOST, TE, body=b"5\r\nabcde\r\n"),
        req(HOST, TE, body=b"0\r\n"),  # the trailers are cut
    ],
)
def test_eof_in_a_body_is_malformed(data: bytes) -> None:
    """EOF before a body's end raises MalformedMessage, even if it came with the last bytes."""
    assert feed(data, eof=True)[1][-1] is MalformedMessage
    conn, _ = feed(data)
    conn.receive_eof()
    assert take(conn)[-1] is MalformedMessage


def test_eof_while_an_answer_is_owed_makes_it_the_last() -> None:
    """EOF after a complete request: it is still answered (PAUSED), then the connection
    closes, pipelined requests included."""
    conn, events = feed(GET + GET, eof=True)
    assert events[1:] == [PAUSED]
    assert not conn.can_keep_alive
    assert conn.answered(True) is False
    assert take(conn) == [CLOSED]


def test_an_unread_body_within_the_limit_is_drained() -> None:
    """Answered before its body was read: the body, up to max_discard_bytes, is read and
    dropped, and the next request follows."""
    limits = Limits(max_discard_bytes=13)
    for body, frame in [(b"x" * 13, b"Content-Length: 13"), (b"3\r\nxyz\r\n0\r\n\r\n", TE)]:
        conn, events = feed(req(HOST, frame), limits=limits)
        head_of(events)
        assert conn.answered(True) is True
        assert conn.deadline is BODY
        for i in range(len(body)):
            conn.receive(body[i : i + 1])
            assert take(conn) == [NEED_DATA]
        conn.receive(GET)
        events = take(conn)
        assert head_of(events).target == "/"


def test_an_unread_body_beyond_the_limit_closes() -> None:
    """A body left unread beyond max_discard_bytes closes the connection, however it is split."""
    limits = Limits(max_discard_bytes=10)
    for pieces in ([b"x" * 11 + GET], [b"x" * 5, b"x" * 6 + GET]):
        conn, _ = feed(req(HOST, b"Content-Length: 11"), limits=limits)
        assert not conn.can_keep_alive  # the answer should say close ...
        assert conn.answered(True) is True  # ... but if kept alive, the limit still holds
        events: list[object] = []
        for piece in pieces:
            conn.receive(piece)
            events += take(conn)
        assert events[-1] is CLOSED
    conn, _ = feed(req(HOST, TE), limits=limits)
    conn.answered(True)
    conn.receive(b"4\r\nxxxx\r\n0\r\n\r\n")  # 14 bytes on the wire
    assert take(conn) == [CLOSED]


def test_broken_framing_while_draining_closes_without_an_error() -> None:
    """A body being discarded whose chunked framing breaks closes the connection: its request
    was answered already, so there is nothing more to answer."""
    conn, _ = feed(req(HOST, TE, body=b"3\r\nab"))
    conn.answered(True)
    conn.receive(b"c\r\nzz\r\n")
    assert take(conn) == [CLOSED]
    assert conn.closed


def test_eof_while_draining_closes() -> None:
    """EOF before a discarded body's end closes."""
    conn, _ = feed(req(HOST, b"Content-Length: 5", body=b"ab"))
    conn.answered(True)
    conn.receive_eof()
    assert take(conn) == [CLOSED]


def test_can_keep_alive_in_each_state() -> None:
    """`can_keep_alive`: yes on a fresh or idle connection and once the body is read; while a
    body is unread only if it is a length within max_discard_bytes; never after EOF or close."""
    limits = Limits(max_discard_bytes=4)
    conn = ServerConnection(limits)
    assert conn.can_keep_alive  # fresh
    conn.receive(GET[:5])
    assert take(conn) == [NEED_DATA]
    assert conn.can_keep_alive  # a head in progress
    conn.receive(GET[5:])
    take(conn)
    assert conn.can_keep_alive  # answer owed
    conn.answered(True)
    assert conn.can_keep_alive  # idle
    conn.receive(req(HOST, b"Content-Length: 5", body=b"a"))
    take(conn)
    assert conn.can_keep_alive  # 4 bytes unread
    conn = ServerConnection(limits)
    conn.receive(req(HOST, b"Content-Length: 5"))
    take(conn)
    assert not conn.can_keep_alive  # 5 bytes unread
    conn.receive(b"abcde")
    assert take(conn) == [b"abcde", END_OF_BODY, PAUSED]
    assert conn.can_keep_alive  # read whole
    conn = ServerConnection(limits)
    conn.receive(req(HOST, TE, body=b"1\r\na\r\n"))
    take(conn)
    assert not conn.can_keep_alive  # chunked: its length is unknown
    conn.receive_eof()
    assert not conn.can_keep_alive
    conn = ServerConnection(limits)
    conn.receive(b"\0\r\n")
    assert take(conn) == [MalformedMessage]
    assert not conn.can_keep_alive  # closed


# -- detach and deadline ---------------------------------------------------------------------


def test_detach_returns_the_raw_bytes_from_the_current_head_on() -> None:
    """`detach` gives back the current head and everything after it byte for byte (not the
    answered requests or the empty lines before the head), then the connection is closed."""
    head = req(b"hOsT:  a  ", b"Upgrade: websocket", b"Connection: Upgrade")
    after = b"\x81\x05hello" + GET
    conn, _events = feed(GET + b"\r\n" + head + after[:3])
    conn.answered(True)
    head_of(take(conn))
    conn.receive(after[3:])
    assert conn.detach() == head + after
    assert conn.closed
    assert take(conn) == [CLOSED]


def test_detach_after_a_head_that_came_in_pieces() -> None:
    """A head received in pieces detaches whole."""
    data = req(HOST, b"Expect: 100-continue", b"Content-Length: 3") + b"abc"
    conn = ServerConnection()
    for i in range(len(data) - 3):
        conn.receive(data[i : i + 1])
        events = take(conn)
    head_of(events)
    conn.receive(b"abc")
    assert conn.detach() == data


def test_deadline_in_every_state() -> None:
    """HEADER on a new connection and while a head is partial, BODY while a body is read or
    discarded, None while an answer is owed, IDLE between requests, HEADER once a pipelined
    head waits, None when closed."""
    conn = ServerConnection()
    assert conn.deadline is HEADER
    conn.receive(b"\r\n")
    take(conn)
    assert conn.deadline is HEADER  # still nothing served
    conn.receive(GET[:7])
    take(conn)
    assert conn.deadline is HEADER
    conn.receive(GET[7:] + req(HOST, b"Content-Length: 4", body=b"ab"))
    take(conn)
    assert conn.deadline is None  # an answer is owed (a pipelined request waits)
    conn.answered(True)
    assert conn.deadline is HEADER  # the pipelined head is there
    assert take(conn)[1:] == [b"ab", NEED_DATA]
    assert conn.in_body
    assert conn.deadline is BODY
    conn.receive(b"cd")
    assert take(conn) == [b"cd", END_OF_BODY, PAUSED]
    assert conn.deadline is None
    conn.answered(True)
    assert conn.deadline is IDLE
    conn.receive(b"\r\n")
    take(conn)
    assert conn.deadline is IDLE  # empty lines are not a head
    conn.receive(req(HOST, b"Content-Length: 4"))
    take(conn)
    assert conn.deadline is BODY
    conn.answered(True)
    assert conn.deadline is BODY  # discarding
    conn.receive(b"abcd")
    assert take(conn) == [NEED_DATA]
    assert conn.deadline is IDLE
    conn.receive(req(HOST, b"Content-Length: 1"))
    take(conn)
    conn.receive(b"x")
    assert take(conn) == [b"x", END_OF_BODY, PAUSED]
    assert conn.deadline is None
    conn.answered(False)
    assert conn.deadline is None

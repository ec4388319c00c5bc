"""The request cycle of the HTTP/1.1 server core (gateway.proxy.h1.server): pipelining and
keep-alive, EOF in each state, draining an unread body, detach and the client deadline."""

from __future__ import annotations

import pytest

from gateway.proxy.h1.errors import MalformedMessage
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
from tests.unit.h1_support import GET, HOST, TE, feed, head_of, req, take


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
    after = take(conn)[0]
    if keep:
        assert isinstance(after, RequestHead)
    else:
        assert after is CLOSED


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

"""Keygate's HTTP/1.1 server core against h11, an independent parser, on the same bytes: Keygate
may refuse what h11 accepts, but what it accepts h11 accepts too, with the same method,
target, headers, body and framing (the same bytes left for the next request)."""

from __future__ import annotations

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.proxy.h1.errors import ProtocolError
from gateway.proxy.h1.server import (
    END_OF_BODY,
    NEED_DATA,
    PAUSED,
    RequestHead,
    ServerConnection,
)
from tests.unit.h1_requests import mutated, requests
from tests.unit.h1_support import MAX_EVENTS

Head = tuple[bytes, bytes, list[tuple[bytes, bytes]]]


class Outcome:
    """How far one parser got with the bytes: the head, the body so far, whether the body
    ended, the bytes left after it, and whether it refused them."""

    def __init__(self) -> None:
        self.head: Head | None = None
        self.body = b""
        self.ended = False
        self.left = -1
        self.refused = False


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def keygate(data: bytes) -> Outcome:
    out = Outcome()
    conn = ServerConnection()
    conn.receive(data)
    for _ in range(MAX_EVENTS):
        try:
            event = conn.next_event()
        except ProtocolError:
            out.refused = True
            return out
        if isinstance(event, RequestHead):
            headers = [(_raw(n).lower(), _raw(v)) for n, v in event.headers]
            out.head = (_raw(event.method), _raw(event.target), headers)
        elif isinstance(event, bytes):
            out.body += event
        elif event is END_OF_BODY:
            out.ended = True
        elif event is PAUSED:
            out.ended = True  # a request without a body ends with its head
            out.left = conn.buffered
            return out
        else:
            assert event is NEED_DATA, event
            return out
    raise AssertionError("next_event never waited")


def oracle(data: bytes) -> Outcome:
    out = Outcome()
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    # h11 refuses empty lines before a request line; RFC 9112 §2.2 says to ignore them, and
    # Keygate does, so h11 is given the bytes after them.
    while data.startswith(b"\r\n"):
        data = data[2:]
    conn.receive_data(data)
    for _ in range(MAX_EVENTS):
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            out.refused = True
            return out
        if isinstance(event, h11.Request):
            headers = [(bytes(n), bytes(v)) for n, v in event.headers]
            out.head = (bytes(event.method), bytes(event.target), headers)
        elif isinstance(event, h11.Data):
            out.body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            # Stop here: what h11 says next is about the connection (it refuses bytes after a
            # request that closes it), not about this request's framing.
            out.ended = True
            out.left = len(conn.trailing_data[0])
            return out
        else:
            assert event is h11.NEED_DATA, event
            return out
    raise AssertionError("h11 never waited")


def comparable(head: Head) -> Head:
    """h11 lower-cases header names and the Transfer-Encoding value; both are case-blind."""
    method, target, headers = head
    fixed = [(n, v.lower() if n == b"transfer-encoding" else v) for n, v in headers]
    return method, target, fixed


def check(data: bytes) -> None:
    ours, theirs = keygate(data), oracle(data)
    if ours.head is None:
        return  # refused or not yet complete: always allowed
    assert theirs.head is not None, f"Keygate accepted a head h11 refuses: {data!r}"
    assert comparable(ours.head) == comparable(theirs.head), data
    if ours.refused:
        return  # Keygate refused the body: allowed
    # Keygate's body so far is h11's: h11 refusing a body Keygate takes, or framing it
    # differently, shows up here.
    assert not theirs.refused, f"Keygate accepted a body h11 refuses: {data!r}"
    assert ours.body == theirs.body, data
    assert ours.ended == theirs.ended, data
    assert ours.left == theirs.left, data  # the same bytes are left for the next request


NEXT = b"GET /next HTTP/1.1\r\nHost: b\r\n\r\n"


@settings(max_examples=400, deadline=None)
@given(requests(), st.sampled_from([b"", NEXT, NEXT[:10]]))
def test_valid_requests_agree_with_h11(case: tuple[bytes, object], after: bytes) -> None:
    """Generated valid requests: both parsers take the same head and body and leave the same
    bytes for the next request."""
    wire, _ = case
    check(wire + after)
    ours = keygate(wire + after)
    assert ours.head is not None, wire
    assert not ours.refused


@st.composite
def faulty(draw: st.DrawFn) -> bytes:
    wire, _ = draw(requests())
    return draw(mutated(wire + draw(st.sampled_from([b"", NEXT]))))


@settings(max_examples=1000, deadline=None)
@given(faulty())
@example(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX: a \r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
@example(
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n"
)
@example(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
def test_mutated_requests_never_accepted_beyond_h11(data: bytes) -> None:
    """Flipped bytes, inserted CR/LF/space/tab, repeated framing headers, odd versions: Keygate
    refuses, or agrees with h11 exactly; it never accepts framing h11 rejects."""
    check(data)

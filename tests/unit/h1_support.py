"""Drivers for the sans-IO server connection in tests: bytes in, events out, no sockets."""

from __future__ import annotations

from gateway.proxy.h1.errors import ProtocolError
from gateway.proxy.h1.limits import DEFAULT_LIMITS, Limits
from gateway.proxy.h1.server import (
    CLOSED,
    END_OF_BODY,
    NEED_DATA,
    PAUSED,
    RequestHead,
    ServerConnection,
)

# Far more than any test stream needs: a loop that does not end is a failure, not a hang.
MAX_EVENTS = 10_000

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def head_of(events: list[object]) -> RequestHead:
    assert isinstance(events[0], RequestHead), events
    return events[0]


def req(*fields: bytes, line: bytes = b"GET / HTTP/1.1", body: bytes = b"") -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


HOST = b"Host: a"
TE = b"Transfer-Encoding: chunked"


def take(conn: ServerConnection) -> list[object]:
    """Events until the connection waits (NEED_DATA, PAUSED, CLOSED); a ProtocolError is
    recorded as its class and ends the list."""
    events: list[object] = []
    for _ in range(MAX_EVENTS):
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            events.append(type(exc))
            return events
        events.append(event)
        if event is NEED_DATA or event is PAUSED or event is CLOSED:
            return events
    raise AssertionError("next_event never waited")


def feed(
    data: bytes, *, limits: Limits = DEFAULT_LIMITS, eof: bool = False
) -> tuple[ServerConnection, list[object]]:
    """A new connection given `data` (and the end of input): it and its first events."""
    conn = ServerConnection(limits)
    conn.receive(data)
    if eof:
        conn.receive_eof()
    return conn, take(conn)


def serve(
    pieces: list[bytes], *, limits: Limits = DEFAULT_LIMITS, eof: bool = True
) -> list[object]:
    """Feed `pieces` one receive() at a time, answering each request (keep-alive when allowed)
    as soon as it is complete, the way the front does. Events as (kind, value) with the body
    pieces of each request joined, so streams split differently compare equal."""
    conn = ServerConnection(limits)
    out: list[object] = []
    body = b""

    def pump() -> bool:
        nonlocal body
        for _ in range(MAX_EVENTS):
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                out.append(("error", type(exc)))
                return False
            if isinstance(event, bytes):
                assert event, "an empty body piece"
                body += event
            elif event is END_OF_BODY:
                out.append(("body", body))
                body = b""
            elif isinstance(event, RequestHead):
                out.append(("head", event))
            elif event is PAUSED:
                out.append(("answered", conn.answered(conn.can_keep_alive)))
            elif event is CLOSED:
                out.append(("closed", None))
                return False
            else:
                assert event is NEED_DATA
                return True
        raise AssertionError("next_event never waited")

    for piece in pieces:
        conn.receive(piece)
        if not pump():
            return out
    if eof:
        conn.receive_eof()
        pump()
    return out

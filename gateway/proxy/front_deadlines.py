"""How the fast front's client connections end in time: the client deadlines its HTTP/1.1
state machine names, and the lingering close.

The deadlines are checked by the worker's one periodic sweep (front_context.py), never on the
request path: the front's driver (`front.FrontProtocol`) only notes when the running deadline
started. When one has passed, the client is told why if it is owed an answer (408), the
reason is counted, and the driver closes the connection.

Closing a socket with unread bytes in it resets the connection, and a reset can destroy the
answer before the client reads it. So a connection closed while its client may still be
sending (a refused upload, a head over a limit) first shuts its sending side, then reads and
drops at most LINGER_BYTES for at most LINGER_SECONDS (nginx's lingering close, bounded).
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from gateway import metrics
from gateway.errors import GatewayError, RequestTimeout
from gateway.proxy.front_body import RequestBody
from gateway.proxy.front_context import ClientDeadlines
from gateway.proxy.h1.server import BODY, HEADER

LINGER_BYTES: Final = 1024 * 1024
LINGER_SECONDS: Final = 2.0


class Answers(Protocol):
    """The connection's answering side (`front_exchange.Exchanger`)."""

    def fail(self, error: GatewayError) -> None: ...


def expired(which: str, busy: bool, waited: float, limits: ClientDeadlines) -> bool:
    """Whether the running deadline `which` (the state machine's `deadline`) has passed after
    `waited` seconds. While a request is being answered only the body's runs."""
    if busy and which is not BODY:
        return False
    limit = limits.header if which is HEADER else limits.body if which is BODY else limits.idle
    return waited >= limit


def time_out(which: str, busy: bool, buffered: int, out: Answers, body: RequestBody | None) -> None:
    """The deadline `which` has passed: answer the request being read, if any, and count the
    close (the caller closes)."""
    if which is HEADER and buffered:
        metrics.connection_closed("header-timeout")
        out.fail(RequestTimeout("the request head did not arrive in time"))
    elif which is BODY and busy:
        metrics.connection_closed("body-timeout")
        if body is not None:
            body.fail(ConnectionError("the request body did not arrive in time"))
        out.fail(RequestTimeout("the request body did not arrive in time"))
    else:
        metrics.connection_closed(f"{which}-timeout")


class Lingering:
    """A connection in its lingering close: its sending side is shut, what the client still
    sends is dropped, and the socket closes after LINGER_BYTES or LINGER_SECONDS."""

    __slots__ = ("_left", "_since", "_transport")

    def __init__(self, transport: asyncio.Transport, now: float, *, paused: bool) -> None:
        transport.write_eof()
        self._transport = transport
        self._left = LINGER_BYTES
        self._since = now
        if paused:
            transport.resume_reading()

    def received(self, size: int) -> None:
        """The client sent `size` bytes more: they are dropped."""
        self._left = max(0, self._left - size)
        if not self._left:
            self._transport.close()

    def check(self, now: float) -> None:
        """For the sweep: close once LINGER_SECONDS have passed."""
        if now - self._since >= LINGER_SECONDS:
            self._transport.close()

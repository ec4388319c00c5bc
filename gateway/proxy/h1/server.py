"""The server side of HTTP/1.1: a client's requests in, the gateway's answers out.

`ServerConnection` takes the bytes a client sends (`receive`, `receive_eof`) and gives back
events (`next_event`): a `RequestHead`, body pieces (`bytes`), `END_OF_BODY`, or one of the
sentinels `NEED_DATA` (nothing complete yet), `PAUSED` (a request is in flight: what follows
waits until `answered`) and `CLOSED` (the client has finished). Broken framing raises a
`ProtocolError`; the connection is then answered once and closed (in the body of a request
already answered, it is just CLOSED).

Requests are taken strictly one at a time: the driver answers a request, calls `answered`,
and only then sees the next (pipelined) one. `answered` also decides whether the connection
goes on: a request whose body was not read is drained up to `Limits.max_discard_bytes`, never
more; beyond that, and after every error, the connection closes.

Which client deadline applies now is `deadline` (`HEADER`, `BODY`, `IDLE` or None): the
state machine names it and the driver keeps the clock.

Heads are tokenized by llhttp (httptools) one complete head at a time — the end of the head
is found here, so the bytes after it are always known (a hand-over replays them verbatim) —
and held to RFC 9112 where llhttp is lenient or silent: a bare LF never ends a line, HTTP/1.1
needs exactly one Host, only HTTP/1.0 and 1.1 are served, a transfer coding in an HTTP/1.0
request is faulty framing, and the field count, field lines and request line are capped.
"""

from __future__ import annotations

from typing import Final

from gateway.proxy.h1.chunked import ChunkedDecoder
from gateway.proxy.h1.errors import (
    BadChunk,
    HeadTooLarge,
    MalformedMessage,
    ProtocolError,
    TooManyFields,
)
from gateway.proxy.h1.limits import DEFAULT_LIMITS, Limits
from gateway.proxy.h1.request_head import RequestHead as RequestHead
from gateway.proxy.h1.request_head import check_request_line, parse_head

Header = tuple[str, str]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")
PAUSED: Final = _Sentinel("PAUSED")
CLOSED: Final = _Sentinel("CLOSED")
END_OF_BODY: Final = _Sentinel("END_OF_BODY")

# Which client deadline runs (the driver arms one timer for it).
HEADER: Final = "header"  # a head has begun, or a new connection has sent nothing yet
BODY: Final = "body"  # between two reads of a request body
IDLE: Final = "idle"  # keep-alive: between two requests


# States of one request cycle.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_END: Final = 3
_DONE: Final = 4
_DISCARD: Final = 5
_CLOSED: Final = 6


class ServerConnection:
    """One client connection's HTTP/1.1 state (see the module docstring)."""

    __slots__ = (
        "_block",
        "_buf",
        "_chunked",
        "_discard_left",
        "_eof",
        "_keep_alive",
        "_remaining",
        "_served",
        "_state",
        "head",
        "limits",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.head: RequestHead | None = None  # the request in flight
        self._state = _IDLE
        self._buf = b""
        self._block = b""  # the raw head of the request in flight, for `detach`
        self._remaining = 0  # body bytes still to come (length framing)
        self._chunked: ChunkedDecoder | None = None
        self._discard_left = 0
        self._keep_alive = True
        self._eof = False
        self._served = 0

    # -- what the driver asks ---------------------------------------------------------------

    @property
    def deadline(self) -> str | None:
        """The client deadline that runs now: HEADER, BODY, IDLE, or None (the gateway owes
        an answer, or the connection is over)."""
        state = self._state
        if state == _IDLE:
            if self._buf:
                return HEADER
            return IDLE if self._served else HEADER
        if state == _HEAD:
            return HEADER
        if state in (_BODY, _DISCARD):
            return BODY
        return None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken (pipelined requests wait here)."""
        return len(self._buf)

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def in_body(self) -> bool:
        """The request in flight still has body bytes to come."""
        return self._state == _BODY

    @property
    def can_keep_alive(self) -> bool:
        """Whether an answer now may keep the connection open: the client asked for it, and
        any unread body can be drained within the limit (else the answer says close)."""
        if not self._keep_alive or self._eof:
            return False
        if self._state == _BODY:
            return self._chunked is None and self._remaining <= self.limits.max_discard_bytes
        return self._state in (_END, _DONE, _IDLE, _HEAD)

    # -- bytes in ---------------------------------------------------------------------------

    def receive(self, data: bytes) -> bool:
        """Bytes from the client (take the events with `next_event`); True if they begin a
        new head on a connection that has served a request (the IDLE deadline gives way to
        HEADER: the driver restarts its clock)."""
        if self._state == _CLOSED or not data:
            return False
        if self._buf:
            self._buf += data
            return False
        self._buf = data
        return self._state == _IDLE and self._served > 0

    def receive_eof(self) -> None:
        """The client will send nothing more."""
        self._eof = True
        self._keep_alive = False

    def next_event(self) -> RequestHead | bytes | _Sentinel:
        """The next event; raises ProtocolError (the state is then closed)."""
        state = self._state
        try:
            if state in (_IDLE, _HEAD):
                return self._next_head()
            if state == _BODY:
                return self._next_body()
            if state == _DISCARD:
                return self._discard()
        except ProtocolError:
            self._state = _CLOSED
            self._keep_alive = False
            raise
        if state == _END:
            self._state = _DONE
            return END_OF_BODY
        if state == _DONE:
            return PAUSED
        return CLOSED

    def detach(self) -> bytes:
        """Give up the connection (a hand-over): the current request's raw head and every byte
        received after it, exactly as the client sent them. Only right after its head."""
        data = self._block + self._buf
        self._block = self._buf = b""
        self._state = _CLOSED
        return data

    # -- the answer -------------------------------------------------------------------------

    def answered(self, keep_alive: bool) -> bool:
        """The answer to the request in flight is written; True if the connection goes on to
        the next request (its events follow from `next_event`), False if it must close."""
        self.head = None
        self._block = b""
        self._served += 1
        if not (keep_alive and self._keep_alive) or self._state == _CLOSED:
            self._state = _CLOSED
            return False
        if self._state == _BODY:
            # Answered before the body was read (a refusal, an early upstream answer): read the
            # rest and drop it so the client sees its answer, within the limit.
            self._state = _DISCARD
            self._discard_left = self.limits.max_discard_bytes
            return True
        self._state = _IDLE
        return True

    # -- internals --------------------------------------------------------------------------

    def _next_head(self) -> RequestHead | _Sentinel:
        buf = self._buf
        if buf[:1] in (b"\r", b"\n"):
            # RFC 9112 §2.2: empty lines (CRLF, never a bare LF) before a request line are
            # ignored. A CR at the very end may be half of one.
            stripped = buf.lstrip(b"\r\n")
            lead = buf[: len(buf) - len(stripped)]
            if not stripped and lead.endswith(b"\r"):
                lead, stripped = lead[:-1], b"\r"
            if lead.count(b"\r\n") * 2 != len(lead):
                raise MalformedMessage("the request is malformed")
            self._buf = buf = stripped
        if not buf:
            self._state = _IDLE
            return CLOSED if self._eof else NEED_DATA
        self._state = _HEAD
        end = buf.find(b"\r\n\r\n")
        limits = self.limits
        if end < 0:
            if len(buf) > limits.max_head_bytes:
                raise HeadTooLarge("the request head is too large")
            nl = buf.count(b"\n")
            if nl != buf.count(b"\r\n"):
                raise MalformedMessage("the request is malformed")  # a bare LF
            if nl:
                # The request line is whole: judged now, so an HTTP/0.9 client (which sends
                # no fields) is answered instead of left waiting for a head that never ends.
                line_end = buf.find(b"\r\n")
                check_request_line(buf, line_end, limits)
                if buf.count(b" ", 0, line_end) != 2:  # see parse_head
                    raise MalformedMessage("the request line is malformed")
            elif len(buf) - (buf[-1] == 13) > limits.max_request_line:
                # A CR at the very end may be half of the line's CRLF: not yet in the line.
                raise HeadTooLarge("the request line is too long")
            if nl > limits.max_header_count + 1:
                raise TooManyFields("the request has too many header fields")
            if self._eof:
                self._state = _CLOSED
                return CLOSED  # a head cut short: nothing to answer
            return NEED_DATA
        if end + 4 > limits.max_head_bytes:
            raise HeadTooLarge("the request head is too large")
        block = buf[: end + 4]
        head = parse_head(block, limits)
        self._block = block
        self._buf = buf[end + 4 :]
        self.head = head
        self._keep_alive = head.keep_alive and not self._eof
        if head.chunked:
            self._chunked = ChunkedDecoder(limits)
            self._state = _BODY
        elif head.length > 0:
            self._chunked = None
            self._remaining = head.length
            self._state = _BODY
        else:
            self._chunked = None
            self._state = _DONE
        return head

    def _next_body(self) -> bytes | _Sentinel:
        buf = self._buf
        if not buf:
            if self._eof:
                raise MalformedMessage("the request body ended early")
            return NEED_DATA
        decoder = self._chunked
        if decoder is None:
            remaining = self._remaining
            if len(buf) <= remaining:
                self._buf = b""
                self._remaining = remaining - len(buf)
                if not self._remaining:
                    self._state = _END
                return buf
            self._buf = buf[remaining:]
            self._remaining = 0
            self._state = _END
            return buf[:remaining]
        pieces: list[bytes] = []
        self._buf = decoder.feed(buf, pieces)
        if decoder.done:
            self._state = _END
        if pieces:
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if decoder.done:
            self._state = _DONE
            return END_OF_BODY
        if self._eof:
            raise MalformedMessage("the request body ended early")
        return NEED_DATA

    def _discard(self) -> RequestHead | _Sentinel:
        buf = self._buf
        if not buf:
            return CLOSED if self._eof else NEED_DATA
        decoder = self._chunked
        if decoder is None:
            take = min(len(buf), self._remaining)
            self._remaining -= take
            rest = buf[take:]
            dropped = take
            done = not self._remaining
        else:
            try:
                rest = decoder.feed(buf, [])
            except BadChunk:
                # The request has its answer already: a second one (for the broken framing)
                # would reach the client as the answer to a request it did not send.
                self._state = _CLOSED
                self._keep_alive = False
                return CLOSED
            dropped = len(buf) - len(rest)
            done = decoder.done
        self._buf = rest
        self._discard_left -= dropped
        # The limit is checked first, so whether a body is drained does not depend on how its
        # bytes were split into reads.
        if self._discard_left < 0 or (not done and self._eof):
            self._state = _CLOSED
            self._keep_alive = False
            return CLOSED
        if done:
            self._state = _IDLE
            return self._next_head()
        return NEED_DATA

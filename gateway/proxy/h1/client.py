"""The client side of HTTP/1.1, sans-IO: requests out to an upstream, responses in.

`ClientMachine` holds the state of one upstream connection. `start` renders a request head
(and `data` / `end` frame its body, by length or chunked); `receive` takes the upstream's bytes
and returns events: a `Head`, body pieces as plain `bytes` (no wrapper: one allocation less per
piece on the hot path), and `END`. `receive_eof` ends a close-delimited body, or raises
`ClosedEarly`. `reusable` says whether another request may follow on the same connection.

Response heads are tokenized by llhttp (through httptools): strict, because a proxy that frames
an upstream response differently than the upstream meant is a response-splitting bug, and in
C, because on the hot path a pure-Python head parser cost about twice as much (measured inside
the running proxy, where caches are cold, not in a tight loop). Only the head goes to llhttp:
the framing is decided here, because llhttp cannot be told that a response answers a HEAD
request. A response with both `Content-Length` and `Transfer-Encoding`, a malformed or
repeated length, a transfer coding other than `chunked`, obsolete line folding or a bare CR/LF
is refused. Errors are the core's (`h1.errors`), plus `ClosedEarly`::

    ProtocolError
    ├── MalformedMessage     a bad head, an unasked 101, a coding other than chunked
    │   └── BadChunk         a chunked body's framing is broken
    ├── HeadTooLarge         the head is over `max_head_bytes`
    └── ClosedEarly          the upstream closed before its answer was complete
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

import httptools

from gateway.proxy.h1.chunked import ChunkedDecoder
from gateway.proxy.h1.errors import HeadTooLarge, MalformedMessage, ProtocolError
from gateway.proxy.h1.limits import DEFAULT_LIMITS, Limits
from gateway.proxy.headers import Field, Header
from gateway.records import maker

Framing = Literal["none", "length", "chunked", "close"]


class Head(NamedTuple):
    """A final response head (a named tuple: built once per response, on the hot path)."""

    status: int
    reason: bytes  # raw: decoded only by those who need text
    fields: list[Field]  # raw, in order: the fast front relays them without decoding
    framing: Framing
    length: int  # for "length" framing
    keep_alive: bool


# Built per request: `Head(...)` without its Python-level __new__ (records.py).
_head: Final = maker(Head)


class EndOfMessage:
    """The response is complete (one instance: `END`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END: Final = EndOfMessage()
Event = Head | bytes | EndOfMessage


class ClosedEarly(ProtocolError):
    """The upstream closed the connection before its answer was complete."""

    def __init__(self, message: str, *, before_response: bool) -> None:
        super().__init__(message)
        self.before_response = before_response  # not one byte of an answer came


# Each side's state. A response may end before its request body does (an early answer).
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_DONE: Final = 3
_CLOSED: Final = 4


class ClientMachine:
    """One upstream connection's HTTP/1.1 state, for one exchange at a time."""

    __slots__ = (
        "_buf",
        "_chunks",
        "_framing",
        "_keep_alive",
        "_limits",
        "_method",
        "_ours",
        "_received",
        "_remaining",
        "_reusable",
        "_theirs",
        "_to_send",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._method = "GET"
        self._ours = _IDLE
        self._theirs = _IDLE
        self._reusable = True  # no error, no EOF, nothing after an answer
        self._keep_alive = True
        self._received = False
        self._buf = bytearray()
        self._framing: Framing = "none"
        self._remaining = 0
        self._chunks: ChunkedDecoder | None = None
        self._to_send = -1  # request body bytes still due by Content-Length; -1: chunked

    @property
    def reusable(self) -> bool:
        """Whether another request may be sent: both sides of the last exchange are over, the
        upstream kept the connection alive, sent nothing after its answer and did not close."""
        return (
            self._reusable
            and self._keep_alive
            and self._ours in (_IDLE, _DONE)
            and self._theirs in (_IDLE, _DONE)
        )

    @property
    def awaiting_head(self) -> bool:
        return self._theirs == _HEAD

    @property
    def answered(self) -> bool:
        """The response is complete (whether or not the request body is all sent)."""
        return self._theirs == _DONE

    # requests out -------------------------------------------------------------------------------

    def start(
        self,
        method: str,
        target: str,
        host: str,
        headers: Sequence[Header],
        *,
        length: int | None = None,
        chunked: bool = False,
    ) -> bytes:
        """The request head to send; a body follows by `length`, or `chunked`, or none.

        Raises ValueError (nothing changed) for a CR, LF or NUL inside the head."""
        if not self.reusable:
            raise RuntimeError("the connection cannot take another request")
        if length is not None:
            head = request_head(method, target, host, [*headers, ("Content-Length", str(length))])
        elif chunked:
            head = request_head(method, target, host, [*headers, ("Transfer-Encoding", "chunked")])
        else:
            head = request_head(method, target, host, headers)
        self._method = method
        self._ours = _BODY if (length or chunked) else _DONE
        self._to_send = -1 if chunked else (length or 0)
        self._theirs = _HEAD
        self._received = False
        self._keep_alive = True
        return head

    def data(self, chunk: bytes) -> tuple[bytes, ...]:
        """The bytes to write for one piece of the request body (for `writelines`)."""
        if not chunk:
            return ()
        if self._to_send < 0:
            return (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        if len(chunk) > self._to_send:
            self._reusable = False
            raise ValueError("more request body than its Content-Length")
        self._to_send -= len(chunk)
        return (chunk,)

    def end(self) -> bytes:
        """The bytes that end the request body; ValueError if it is shorter than announced."""
        if self._to_send > 0:
            self._reusable = False
            raise ValueError("the request body ended before its Content-Length")
        self._ours = _DONE
        return b"0\r\n\r\n" if self._to_send < 0 else b""

    # responses in -------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Events for the upstream's next bytes; raises ProtocolError (the connection is
        then spent)."""
        theirs = self._theirs
        try:
            if theirs == _HEAD:
                return self._head(data)
            if theirs == _BODY:
                out: list[Event] = []
                self._body(data, out)
                return out
        except ProtocolError:
            self._theirs = _CLOSED
            self._reusable = False
            raise
        if data:  # bytes nobody asked for: this connection's framing cannot be trusted any more
            self._reusable = False
        return []

    def receive_eof(self) -> list[Event]:
        """The upstream closed: END for a close-delimited body, ClosedEarly if an answer was
        due or under way, else nothing."""
        theirs = self._theirs
        self._reusable = False
        self._theirs = _CLOSED if theirs != _DONE else _DONE
        if theirs == _BODY and self._framing == "close":
            self._theirs = _DONE
            return [END]
        if theirs == _HEAD:
            before = not self._received
            raise ClosedEarly(
                "the upstream closed the connection before answering"
                if before
                else "the upstream closed the connection mid-response",
                before_response=before,
            )
        if theirs == _BODY:
            raise ClosedEarly(
                "the upstream closed the connection mid-response", before_response=False
            )
        return []

    def _head(self, data: bytes) -> list[Event]:
        self._received = True
        buf = self._buf
        limit = self._limits.max_head_bytes
        if not buf and (end := data.find(b"\r\n\r\n")) >= 0:
            block, rest = data[: end + 4], data[end + 4 :]  # the usual case: one read
        else:
            start = max(0, len(buf) - 3)
            buf += data
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                if len(buf) > limit:
                    raise HeadTooLarge("the response head is too large")
                return []
            block, rest = bytes(buf[: end + 4]), bytes(buf[end + 4 :])
            buf.clear()
        if len(block) > limit:
            raise HeadTooLarge("the response head is too large")
        head = parse_head(block, self._method)
        if head.status < 200:
            # Interim answers (100 Continue, 103 Early Hints) are not relayed. A 101 was never
            # asked for here: WebSocket upgrades take another path.
            if head.status == 101:
                raise MalformedMessage("a 101 Switching Protocols nobody asked for")
            return self._head(rest) if rest else []
        self._keep_alive = head.keep_alive
        self._framing = framing = head.framing
        if framing == "none" or (framing == "length" and head.length == 0):
            self._theirs = _DONE
            if rest:
                self._reusable = False
            return [head, END]
        if framing == "length" and len(rest) == head.length:
            self._theirs = _DONE
            return [head, rest, END]  # the usual small answer: whole, with its head
        self._theirs = _BODY
        self._remaining = head.length
        self._chunks = ChunkedDecoder(self._limits) if framing == "chunked" else None
        out: list[Event] = [head]
        if rest:
            self._body(rest, out)
        return out

    def _body(self, data: bytes, out: list[Event]) -> None:
        framing = self._framing
        if framing == "length":
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                out.append(data)
                return
            if len(data) > remaining:
                self._reusable = False  # more bytes than announced
                data = data[:remaining]
            self._remaining = 0
            out.append(data)
            out.append(END)
            self._theirs = _DONE
        elif framing == "chunked":
            decoder = self._chunks
            assert decoder is not None
            rest = decoder.feed(data, out)  # type: ignore[arg-type]  # appends bytes only
            if decoder.done:
                out.append(END)
                self._theirs = _DONE
                if rest:
                    self._reusable = False
        elif data:
            out.append(data)


# -- heads: pure ---------------------------------------------------------------------------------


class _HeadFields:
    """httptools callbacks: collect the reason phrase and the raw header fields."""

    __slots__ = ("complete", "fields", "reason")

    def __init__(self) -> None:
        self.reason = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


# Lengths of the framing headers' names: content-length, transfer-encoding, connection.
_FRAMING_SIZES: Final = frozenset({14, 17, 10})


def parse_head(block: bytes, method: str) -> Head:
    """Parse a response head, through its final CRLFCRLF; raises MalformedMessage.

    llhttp validates the syntax strictly: a bare CR or LF, obs-fold, a space in or before a
    field name, control characters, a malformed, repeated or comma-listed Content-Length, or
    Content-Length together with Transfer-Encoding are all refused. Framing is then decided
    here, from the fields, for the request `method`.
    """
    fields = _HeadFields()
    parser = httptools.HttpResponseParser(fields)
    try:
        parser.feed_data(block)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        raise MalformedMessage("a malformed response head") from None
    status = parser.get_status_code()
    if not fields.complete or status < 100:
        raise MalformedMessage("a malformed response head")
    http11 = parser.get_http_version() == "1.1"
    length = -1
    codings: list[bytes] = []
    connection: list[bytes] = []
    for name, value in fields.fields:
        if len(name) in _FRAMING_SIZES:  # only framing headers need a closer look
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)  # llhttp accepted it: digits only, exactly once
            elif lower == b"transfer-encoding":
                codings.extend(c.strip(b" \t") for c in value.lower().split(b","))
            elif lower == b"connection":
                tokens = value.lower()
                if b"," in tokens:
                    connection.extend(t.strip(b" \t") for t in tokens.split(b","))
                else:  # the usual single token (llhttp has trimmed the value)
                    connection.append(tokens)
    keep_alive = (b"close" not in connection) if http11 else (b"keep-alive" in connection)
    framing: Framing
    if method == "HEAD" or status < 200 or status == 204 or status == 304:
        framing = "none"
    elif codings:
        if [c for c in codings if c] != [b"chunked"] or not http11:
            raise MalformedMessage("a transfer coding other than chunked")
        framing = "chunked"
    elif length >= 0:
        framing = "length"
    else:
        framing, keep_alive = "close", False
    return _head((status, fields.reason, fields.fields, framing, max(length, 0), keep_alive))


def request_head(method: str, target: str, host: str, headers: Sequence[Header]) -> bytes:
    """The request line and headers; refuses any CR, LF or NUL inside a name or value."""
    parts = [method, " ", target, " HTTP/1.1\r\nHost: ", host]
    for name, value in headers:
        parts.append("\r\n")
        parts.append(name)
        parts.append(": ")
        parts.append(value)
    parts.append("\r\n\r\n")
    text = "".join(parts)
    # One count instead of a check per header: only the separators may contain CR/LF.
    breaks = len(headers) + 3
    if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
        raise ValueError("header value with a line break")
    return text.encode("utf-8", "surrogateescape")

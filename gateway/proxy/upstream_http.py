"""The upstream side of HTTP/1.1, pure: response heads parsed, request heads rendered, and the
errors an upstream exchange can end in. The I/O is in `connection` (one connection) and
`client` (pools).

Response heads are parsed by llhttp (through httptools): strict, because a proxy that frames an
upstream response differently than the upstream meant is a response-splitting bug, and in C,
because on the hot path a pure-Python head parser cost about twice as much (measured inside
the running proxy, where caches are cold, not in a tight loop). Only the head goes to llhttp;
the body framing (length, chunked, until close, none for HEAD/1xx/204/304) is decided here and
decoded by the connection, because llhttp cannot be told that a response answers a HEAD
request. A response with both `Content-Length` and `Transfer-Encoding`, a malformed or repeated
length, a transfer coding other than `chunked`, obsolete line folding or a bare CR/LF is
refused (502).

Errors (every message is safe to show to the client; none carries request data)::

    UpstreamError
    ├── UpstreamTimeout        connect, pool wait, response head or next body chunk too slow  → 504
    ├── UpstreamUnreachable    refused, unresolvable, TLS failure                             → 502
    ├── UpstreamClosed         closed or reset before the response was complete               → 502
    ├── UpstreamProtocolError  a response the gateway will not relay                         → 502
    └── ClientRequestError     the client's side broke: its body ended early, bad handshake  → 400
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import httptools

from gateway.proxy.headers import Field, Header

Framing = Literal["none", "length", "chunked", "close"]


class UpstreamError(Exception):
    """The upstream exchange failed; the message is safe to show."""


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamUnreachable(UpstreamError):
    pass


class UpstreamClosed(UpstreamError):
    def __init__(self, message: str, *, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response


class UpstreamProtocolError(UpstreamError):
    pass


class ClientRequestError(UpstreamError):
    pass


# -- the response head: pure parsing -----------------------------------------------------------


class Head(NamedTuple):
    """A parsed response head (a named tuple: built once per response, on the hot path)."""

    status: int
    reason: bytes  # raw: decoded only by those who need text
    fields: list[Field]  # raw, in order: the fast front relays them without decoding
    framing: Framing
    length: int  # for "length" framing
    keep_alive: bool


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


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # rare non-UTF-8 bytes: readable, never fatal


def decode_fields(fields: list[Field]) -> list[Header]:
    """Raw header fields as text (names are tokens, so ASCII; values usually are)."""
    return [
        (name.decode("ascii"), value.decode("latin-1") if value.isascii() else _text(value))
        for name, value in fields
    ]


# Lengths of the framing headers' names: content-length, transfer-encoding, connection.
_FRAMING_SIZES = frozenset({14, 17, 10})


def parse_head(block: bytes, method: str) -> Head:
    """Parse a response head, through its final CRLFCRLF; raises UpstreamProtocolError.

    llhttp (via httptools) validates the syntax strictly: a bare CR or LF, obs-fold, a space
    in or before a field name, control characters, a malformed, repeated or comma-listed
    Content-Length, or Content-Length together with Transfer-Encoding are all refused.
    Framing is then decided here, from the fields, for the request `method`.
    """
    fields = _HeadFields()
    parser = httptools.HttpResponseParser(fields)
    try:
        parser.feed_data(block)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        raise UpstreamProtocolError("the upstream sent a malformed response head") from None
    status = parser.get_status_code()
    if not fields.complete or status < 100:
        raise UpstreamProtocolError("the upstream sent a malformed response head")
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
            raise UpstreamProtocolError("the upstream used a transfer coding other than chunked")
        framing = "chunked"
    elif length >= 0:
        framing = "length"
    else:
        framing, keep_alive = "close", False
    return Head(status, fields.reason, fields.fields, framing, max(length, 0), keep_alive)


def request_head(method: str, target: str, host: str, headers: Sequence[Header]) -> bytes:
    """The request line and headers; refuses any CR, LF or NUL inside a name or value."""
    parts = [method, " ", target, " HTTP/1.1\r\nHost: ", host]
    for name, value in headers:
        parts += ("\r\n", name, ": ", value)
    parts.append("\r\n\r\n")
    text = "".join(parts)
    # One count instead of a check per header: only the separators may contain CR/LF.
    breaks = len(headers) + 3
    if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
        raise ValueError("header value with a line break")
    return text.encode("utf-8", "surrogateescape")

"""HTTP/1.1 pieces of the fast front (`front.py`): request heads, chunked bodies, response heads.

Request heads are parsed by llhttp (through httptools), one head at a time: the front finds the
head's end (CRLFCRLF) itself and feeds exactly that block, so it always knows where the next
bytes begin, which a hand-over to the internal aiohttp listener must replay verbatim. Bodies are
framed here (length or chunked) for the same reason: llhttp would consume a pipelined request's
bytes without saying where they started.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple

import httptools

from gateway.proxy.headers import Field, Header

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096
MAX_TRAILER_BYTES = 16 * 1024
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}\Z")
# Lengths of the header names the parser notes (a length test first keeps the pass cheap):
# host, expect, x-api-key, authorization, content-length, transfer-encoding.
_NOTED_SIZES = frozenset({4, 6, 9, 13, 14, 17})


class BadRequestHead(Exception):
    """The client's request head or body framing is malformed (→ 400 and close)."""


class RequestHead(NamedTuple):
    method: str
    target: str
    headers: list[Header]
    keep_alive: bool
    upgrade: bool  # an Upgrade (WebSocket) or CONNECT request: handed over
    length: int  # -1: no Content-Length
    chunked: bool
    expect: bool  # an Expect header (100-continue): handed over
    # Noted while parsing, so the hot path does not scan the headers again for them:
    host: str | None  # the first Host value
    authorization: list[str]  # every Authorization value
    api_keys: list[str]  # every X-API-KEY value

    def values(self, name: str) -> list[str]:
        """Every value of the header `name` (case-insensitive): `handler.HeaderValues`."""
        lower = name.lower()
        if lower == "authorization":
            return self.authorization
        if lower == "x-api-key":
            return self.api_keys
        return [v for k, v in self.headers if len(k) == len(lower) and k.lower() == lower]


class _Fields:
    __slots__ = ("complete", "fields", "keep_alive", "parser", "url")

    def __init__(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpRequestParser | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True
        # Asked here: once a body-less message completes, llhttp has moved on and forgotten.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()


def _text(raw: bytes) -> str:
    # The same decoding aiohttp applies, so both servers see the same strings.
    return raw.decode("utf-8", "surrogateescape")


def parse_request_head(block: bytes) -> RequestHead:
    """Parse one request head, through its final CRLFCRLF; raises BadRequestHead.

    llhttp refuses bare CR/LF, obs-fold, bad names, a malformed or repeated Content-Length,
    Content-Length with Transfer-Encoding, and a request transfer coding other than chunked.
    """
    fields = _Fields()
    parser = httptools.HttpRequestParser(fields)
    fields.parser = parser
    upgrade = False
    try:
        parser.feed_data(block)
    except httptools.HttpParserUpgrade:
        upgrade = True
    except httptools.HttpParserError:
        raise BadRequestHead("the request is malformed") from None
    if not fields.complete:
        raise BadRequestHead("the request is malformed")
    headers: list[Header] = []
    length = -1
    chunked = expect = False
    host: str | None = None
    authorization: list[str] = []
    api_keys: list[str] = []
    for raw_name, raw_value in fields.fields:
        # `_text`, inlined: this loop runs for every header of every request.
        name = raw_name.decode("utf-8", "surrogateescape")
        value = raw_value.decode("utf-8", "surrogateescape")
        headers.append((name, value))
        if len(name) not in _NOTED_SIZES:
            continue
        lower = name.lower()
        if lower == "content-length":
            length = int(value)  # llhttp accepted it: digits only, exactly once
        elif lower == "transfer-encoding":
            chunked = True  # llhttp accepts only codings that end in chunked
            if value.strip(" \t").lower() != "chunked":
                raise BadRequestHead("only the chunked transfer coding is supported")
        elif lower == "expect":
            expect = True
        elif lower == "authorization":
            authorization.append(value)
        elif lower == "x-api-key":
            api_keys.append(value)
        elif lower == "host" and host is None:
            host = value
    method = parser.get_method().decode("ascii")
    if method == "CONNECT":
        upgrade = True
    return RequestHead(
        method,
        _text(fields.url),
        headers,
        fields.keep_alive,
        upgrade or parser.should_upgrade(),
        length,
        chunked,
        expect,
        host,
        authorization,
        api_keys,
    )


class ChunkedDecoder:
    """Incremental decoder of a chunked request body (trailers are read and dropped)."""

    __slots__ = ("_pending", "_remaining", "_state", "_trailer_bytes", "done")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self._pending = b""
        self._trailer_bytes = 0
        self.done = False

    def feed(self, data: bytes, out: list[bytes]) -> bytes:
        """Append decoded pieces to `out`; return the bytes after the body's end (if any)."""
        buf = self._pending + data if self._pending else data
        self._pending = b""
        pos, end = 0, len(buf)
        while pos < end and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = self._DATA_END
                continue
            if state == self._DATA_END:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise BadRequestHead("malformed chunked body")
                pos += 2
                self._state = self._SIZE
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if end - pos > MAX_CHUNK_LINE:
                    raise BadRequestHead("malformed chunked body")
                break
            line, pos = buf[pos:eol], eol + 2
            if state == self._SIZE:
                size = line.split(b";", 1)[0].rstrip(b" \t")
                if not _HEX.match(size):
                    raise BadRequestHead("malformed chunked body")
                self._remaining = int(size, 16)
                self._state = self._DATA if self._remaining else self._TRAILER
            elif line:
                self._trailer_bytes += len(line)
                if self._trailer_bytes > MAX_TRAILER_BYTES:
                    raise BadRequestHead("the request's trailers are too large")
            else:
                self.done = True
        if self.done:
            return buf[pos:]
        self._pending = buf[pos:]
        return b""


_reasons = {s.value: s.phrase for s in HTTPStatus}
_status_lines: dict[tuple[int, bytes], bytes] = {}  # (status, reason) -> line; a few dozen
_STATUS_LINES_MAX = 256


def status_line(status: int, reason: str | None = None) -> str:
    return f"HTTP/1.1 {status} {reason or _reasons.get(status, 'Unknown')}\r\n"


def render_head(status: int, reason: str | None, headers: list[Header]) -> bytes:
    """A response head; values come from llhttp-checked upstream heads or from the gateway."""
    parts = [status_line(status, reason), "Date: ", http_date(), "\r\n"]
    for name, value in headers:
        parts += (name, ": ", value, "\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


def relayed_head(status: int, reason: bytes, fields: list[Field], extra: list[Field]) -> bytes:
    """The head of a relayed response: the upstream's status and kept fields as received
    (llhttp-checked, so no decoding is needed), then `extra`. A Date is added only when the
    upstream sent none: a message carries at most one (RFC 9110 §6.6.1)."""
    line = _status_lines.get((status, reason))
    if line is None:
        phrase = reason or _reasons.get(status, "Unknown").encode()
        line = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
        if len(_status_lines) < _STATUS_LINES_MAX:
            _status_lines[status, reason] = line
    parts = [line]
    dated = False
    for name, value in fields:
        if len(name) == 4 and name.lower() == b"date":
            dated = True
        parts += (name, b": ", value, b"\r\n")
    if not dated:
        parts += (b"Date: ", http_date().encode(), b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header value, formatted once per second."""
    global _date_cache  # a per-process cache of one string
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]

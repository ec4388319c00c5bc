"""A request head, parsed: llhttp (httptools) tokenizes one complete head, and the rules
llhttp is lenient or silent about are checked here (see `server.py`'s docstring)."""

from __future__ import annotations

from typing import Final, NamedTuple

import httptools

from gateway.proxy.h1.errors import (
    HeadTooLarge,
    MalformedMessage,
    TooManyFields,
    UnsupportedVersion,
)
from gateway.proxy.h1.limits import Limits
from gateway.records import maker

Header = tuple[str, str]


class RequestHead(NamedTuple):
    """A request head (a named tuple: built once per request, on the hot path)."""

    method: str
    target: str
    headers: list[Header]
    keep_alive: bool
    upgrade: bool  # an Upgrade request or CONNECT
    length: int  # -1: no Content-Length
    chunked: bool
    # None without an Expect header (or with one in an HTTP/1.0 request: ignored, RFC 9110
    # §10.1.1); CONTINUE for `100-continue` (any case); else the value as sent (answered 417).
    expect: str | None
    # Noted while parsing, so the hot path does not scan the headers again for them:
    host: str | None
    authorization: list[str]  # every Authorization value
    api_keys: list[str]  # every X-API-KEY value

    def values(self, name: str) -> list[str]:
        """Every value of the header `name` (case-insensitive)."""
        lower = name.lower()
        if lower == "authorization":
            return self.authorization
        if lower == "x-api-key":
            return self.api_keys
        return [v for k, v in self.headers if len(k) == len(lower) and k.lower() == lower]

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


# Built per request: `RequestHead(...)` without its Python-level __new__ (records.py).
_request_head: Final = maker(RequestHead)


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


# Lengths of the header names noted while parsing (a length test first keeps the pass cheap):
# host, expect, x-api-key, authorization, content-length, transfer-encoding.
CONTINUE: Final = "100-continue"
_NOTED_SIZES: Final = frozenset({4, 6, 9, 13, 14, 17})


def check_request_line(buf: bytes, line_end: int, limits: Limits) -> bool:
    """The length and version of the request line `buf[:line_end]` (llhttp takes any);
    whether it is HTTP/1.1."""
    if line_end > limits.max_request_line:
        raise HeadTooLarge("the request line is too long")
    # (a line shorter than a version is none: no negative start, which would count from the end)
    claimed = buf[line_end - 8 : line_end] if line_end >= 8 else b""
    if claimed == b"HTTP/1.1":
        return True
    if claimed == b"HTTP/1.0":
        return False
    claimed = buf[buf.rfind(b" ", 0, line_end) + 1 : line_end]
    if claimed.startswith(b"HTTP/"):
        raise UnsupportedVersion("only HTTP/1.0 and HTTP/1.1 are served here")
    raise MalformedMessage("the request line is malformed")  # HTTP/0.9 among others


def parse_head(block: bytes, limits: Limits) -> RequestHead:
    """One complete request head, through its CRLFCRLF (see the module docstring).

    llhttp refuses a bare CR or LF, obs-fold and malformed field lines in a complete head (a
    head still arriving is checked for them in `_next_head`); what it allows is checked here,
    each rule at the cost of a comparison or two on a head of the usual size."""
    line_end = block.find(b"\r\n")
    http11 = check_request_line(block, line_end, limits)
    fields = _Fields()
    parser = httptools.HttpRequestParser(fields)
    fields.parser = parser
    upgrade = False
    try:
        parser.feed_data(block)
    except httptools.HttpParserUpgrade:
        upgrade = True
    except httptools.HttpParserError:
        raise MalformedMessage("the request is malformed") from None
    finally:
        # The parser holds `fields`' bound methods and `fields` the parser: a cycle, which only
        # the garbage collector would free (a collection every ~90 requests, a tail-latency
        # spike each time). Broken here, both go as soon as this function returns.
        fields.parser = None
    if not fields.complete:
        raise MalformedMessage("the request is malformed")
    if len(fields.fields) > limits.max_header_count:
        raise TooManyFields("the request has too many header fields")
    method = parser.get_method().decode("ascii")
    if len(method) + len(fields.url) + 10 != line_end:
        # Not `method SP target SP HTTP/1.x` (RFC 9112 §3): llhttp also takes runs of spaces,
        # which another parser along the way may split differently. Counted, not scanned.
        raise MalformedMessage("the request line is malformed")
    keep_alive = fields.keep_alive
    headers: list[Header] = []
    length = -1
    chunked = False
    expect: str | None = None
    host: str | None = None
    hosts = 0
    authorization: list[str] = []
    api_keys: list[str] = []
    # Only a head longer than the field limit can hold a field over it.
    max_line = limits.max_header_line if len(block) > limits.max_header_line else 1 << 30
    for raw_name, raw_value in fields.fields:
        if raw_value and raw_value[-1] <= 32:
            # llhttp keeps a value's trailing whitespace, which is not part of it (RFC 9112
            # §5): aiohttp strips it, and the policy, the key lookup and the upstream must see
            # the same value whichever server parsed the head. llhttp lets no control byte but
            # HTAB through, so this is SP or HTAB (one compare: cheaper than a scan of the head).
            raw_value = raw_value.rstrip(b" \t")
        if len(raw_name) + len(raw_value) > max_line:
            raise HeadTooLarge("a request header field is too large")
        # The same decoding aiohttp applies, so both servers see the same strings.
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
                raise MalformedMessage("only the chunked transfer coding is supported")
        elif lower == "expect":
            expect = CONTINUE if expect is None and value.lower() == CONTINUE else value
        elif lower == "authorization":
            authorization.append(value)
        elif lower == "x-api-key":
            api_keys.append(value)
        elif lower == "host":
            hosts += 1
            if host is None:
                host = value
    if hosts > 1:
        raise MalformedMessage("the request has more than one Host header")
    if http11 and hosts == 0:
        raise MalformedMessage("an HTTP/1.1 request needs a Host header")
    if not http11:
        expect = None
    if chunked and not http11:
        # RFC 9112 §6.1: a transfer coding in an HTTP/1.0 message is faulty framing.
        raise MalformedMessage("HTTP/1.0 requests cannot use a transfer coding")
    return _request_head(
        (
            method,
            fields.url.decode("utf-8", "surrogateescape"),
            headers,
            keep_alive,
            upgrade or method == "CONNECT" or parser.should_upgrade(),
            length,
            chunked,
            expect,
            host,
            authorization,
            api_keys,
        )
    )

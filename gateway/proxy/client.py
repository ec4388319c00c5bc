"""A lean HTTP/1.1 client for upstreams: one keep-alive pool per upstream, on asyncio protocols.

Why not `aiohttp.ClientSession`: on the benchmark's hot path its per-request machinery (URL
objects, cookie jar, tracing hooks, a stream reader per body) costs about as much as the whole
authorization decision. A proxy needs much less: write one request head, relay body bytes,
parse one response head, keep the connection. So this module does exactly that, and
deliberately has no cookie jar, never follows redirects, never decompresses and never
re-normalises the request target it is given.

Response heads are parsed by llhttp (through httptools): strict, because a proxy that frames an
upstream response differently than the upstream meant is a response-splitting bug, and in C,
because on the hot path a pure-Python head parser cost about twice as much (measured inside
the running proxy, where caches are cold, not in a tight loop). Only the head goes to llhttp;
the body framing (length, chunked, until close, none for HEAD/1xx/204/304) is decided and
decoded here, because llhttp cannot be told that a response answers a HEAD request. A
response with both `Content-Length` and `Transfer-Encoding`, a malformed or repeated length, a
transfer coding other than `chunked`, obsolete line folding or a bare CR/LF is refused (502).

Errors (every message is safe to show to the client; none carries request data)::

    UpstreamError
    ├── UpstreamTimeout        connect, pool wait, response head or next body chunk too slow  → 504
    ├── UpstreamUnreachable    refused, unresolvable, TLS failure                             → 502
    ├── UpstreamClosed         closed or reset before the response was complete               → 502
    ├── UpstreamProtocolError  a response the gateway will not relay                         → 502
    └── ClientRequestError     the client's side broke: its body ended early, bad handshake  → 400
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, Protocol, cast
from urllib.parse import urlsplit

import httptools

from gateway.policy.model import Upstream
from gateway.proxy.headers import Field, Header
from gateway.proxy.outbox import outbox

Framing = Literal["none", "length", "chunked", "close"]

MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is refused
MAX_CHUNK_LINE = 4096  # chunk-size line with extensions, or one trailer line
MAX_TRAILER_BYTES = 16 * 1024
# Flow control on the way back: stop reading the upstream socket while this much body waits
# for a slow client, resume below the low mark. Memory per exchange is bounded by these.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
IDLE_SECONDS = 30.0  # pooled connections older than this are closed rather than reused
SWEEP_SECONDS = 0.25  # read deadlines are checked this often, so fire up to this much late
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}\Z")


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


class BodySource(Protocol):
    """Where a request body comes from (aiohttp's `request.content` is one)."""

    async def readany(self) -> bytes: ...


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


# -- one connection ----------------------------------------------------------------------------

_IDLE, _HEAD, _BODY, _DONE = range(4)
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class Connection(asyncio.Protocol):
    """One upstream connection, serving one exchange at a time; also the response handle.

    After `UpstreamClient.request` returns, `status`, `reason` and `headers` are set; read the
    body with `read()` until it returns b"", then `release()` (or `close()` on any failure).
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.raw_reason = b""
        self.fields: list[Field] = []
        self.idle_since = 0.0
        self._phase = _IDLE
        self._method = "GET"
        self._head_buf = bytearray()
        self._framing: Framing = "none"
        self._remaining = 0
        self._chunk_state = _SIZE
        self._pending = b""
        self._trailer_bytes = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._error: UpstreamError | None = None
        self._reusable = True
        self._lost = False
        self._received = False
        self._sender: asyncio.Task[None] | None = None
        self.counted = True  # holds one of the pool's slots until forgotten
        self._deadline = 0.0
        self._waiting_for = ""
        self._outbox = outbox(self._loop)
        self._held: bytes | None = None  # a request head held until the loop's pass ends
        self._listener: Callable[[Connection], None] | None = None  # see `listen`

    @property
    def reason(self) -> str:
        return _text(self.raw_reason)

    @property
    def headers(self) -> list[Header]:
        """The response's header fields, decoded (the fast front relays `fields` raw)."""
        return decode_fields(self.fields)

    @property
    def framing(self) -> Framing:
        """How the response body is framed, for the request's method (valid after the head)."""
        return self._framing

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's is not a subclass of asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._reusable = False
        if self._phase == _BODY and self._framing == "close" and exc is None:
            self._finish()  # end of a close-delimited body
        elif self._phase in (_HEAD, _BODY) and self._error is None:
            before = self._phase == _HEAD and not self._received
            self._error = UpstreamClosed(
                "the upstream closed the connection before answering"
                if before
                else "the upstream closed the connection mid-response",
                before_response=before,
            )
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self._phase == _IDLE:
            self._pool.discard_idle(self)  # the upstream closed it while it waited in the pool
        elif self._listener is not None:
            self._heard()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._phase == _HEAD:
            self._feed_head(data)
        elif self._phase == _BODY:
            self._feed_body(data)
        else:  # bytes nobody asked for: this connection's framing cannot be trusted any more
            self._reusable = False
            if self._phase == _IDLE and self.transport is not None:
                self.transport.close()
        if self._listener is not None:  # last: the listener sees the whole read's effect
            self._heard()

    # parsing ------------------------------------------------------------------------------------

    def _feed_head(self, data: bytes) -> None:
        self._received = True
        buf = self._head_buf
        if not buf and (end := data.find(b"\r\n\r\n")) >= 0:
            block, rest = data[: end + 4], data[end + 4 :]  # the usual case: one read
        else:
            start = max(0, len(buf) - 3)
            buf += data
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._abort(UpstreamProtocolError("the upstream's response head is too large"))
                return
            block, rest = bytes(buf[: end + 4]), bytes(buf[end + 4 :])
            buf.clear()
        if len(block) > MAX_HEAD_BYTES:
            self._abort(UpstreamProtocolError("the upstream's response head is too large"))
            return
        try:
            head = parse_head(block, self._method)
        except UpstreamProtocolError as exc:
            self._abort(exc)
            return
        if head.status < 200:
            # Interim responses (100 Continue, 103 Early Hints) are not relayed. A 101 was never
            # asked for here: WebSocket upgrades take another path.
            if head.status == 101:
                self._abort(UpstreamProtocolError("the upstream switched protocols unasked"))
            elif rest:
                self._feed_head(rest)
            return
        self.status, self.raw_reason, self.fields = head.status, head.reason, head.fields
        self._framing, self._remaining = head.framing, head.length
        self._reusable = self._reusable and head.keep_alive
        if head.framing == "none" or (head.framing == "length" and head.length == 0):
            self._finish()
            if rest:
                self._reusable = False
        elif head.framing == "length" and len(rest) == head.length:
            self._chunks.append(rest)  # the usual small answer: whole, with its head
            self._buffered += len(rest)
            self._remaining = 0
            self._phase = _DONE
        else:
            self._phase = _BODY
            if rest:
                self._feed_body(rest)
        self._wake()

    def _feed_body(self, data: bytes) -> None:
        if self._framing == "length":
            if len(data) >= self._remaining:
                if len(data) > self._remaining:
                    self._reusable = False  # more bytes than announced
                    data = data[: self._remaining]
                self._remaining = 0
                self._deliver(data)
                self._finish()
            else:
                self._remaining -= len(data)
                self._deliver(data)
        elif self._framing == "chunked":
            self._feed_chunked(data)
        else:
            self._deliver(data)

    def _feed_chunked(self, data: bytes) -> None:
        buf = self._pending + data if self._pending else data
        self._pending = b""
        pos, end = 0, len(buf)
        while pos < end:
            state = self._chunk_state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                self._deliver(buf if take == end and pos == 0 else buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = _DATA_END
            elif state == _DATA_END:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    self._abort(UpstreamProtocolError("the upstream sent a malformed chunk"))
                    return
                pos += 2
                self._chunk_state = _SIZE
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > MAX_CHUNK_LINE:
                        self._abort(UpstreamProtocolError("the upstream sent a malformed chunk"))
                        return
                    break
                line, pos = buf[pos:eol], eol + 2
                if state == _SIZE:
                    size = line.split(b";", 1)[0].rstrip(b" \t")
                    if not _HEX.match(size):
                        self._abort(UpstreamProtocolError("the upstream sent a malformed chunk"))
                        return
                    self._remaining = int(size, 16)
                    self._chunk_state = _DATA if self._remaining else _TRAILER
                elif line:  # a trailer field: dropped (trailers are not relayed)
                    self._trailer_bytes += len(line)
                    if self._trailer_bytes > MAX_TRAILER_BYTES:
                        self._abort(UpstreamProtocolError("the upstream's trailers are too large"))
                        return
                else:
                    if pos < end:
                        self._reusable = False
                    self._finish()
                    return
        if pos < end:
            self._pending = buf[pos:]

    def _deliver(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._phase = _DONE
        self._wake()

    def _abort(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        self._reusable = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    # waiting ------------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def check_deadline(self, now: float) -> None:
        """Called by the pool's sweep: fail the current wait if its deadline has passed."""
        if now < self._deadline:
            return
        waiter = self._waiter
        late = f"the upstream did not send {self._waiting_for} in time"
        if waiter is not None and not waiter.done():
            self._reusable = False
            waiter.set_exception(UpstreamTimeout(late))
        elif self._listener is not None:
            self._abort(UpstreamTimeout(late))
            self._heard()

    async def _wait(self, seconds: float | None, what: str) -> None:
        # A deadline checked by the pool's periodic sweep costs a set insertion per wait,
        # where a timer per wait (call_later + cancel) costs a heap operation each way.
        waiter = self._loop.create_future()
        self._waiter = waiter
        if seconds is not None:
            self._deadline = self._loop.time() + seconds
            self._waiting_for = what
            self._pool.watch(self)
        try:
            await waiter
        finally:
            self._waiter = None
            if seconds is not None:
                self._pool.unwatch(self)

    # one exchange -------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self._reusable and not self._lost and self._error is None

    def start(self, method: str, head: bytes, *, hold: bool = False) -> None:
        """Begin an exchange: reset the response state and write the request head.

        With `hold` (a request without a body: nothing follows the head) the head is written
        when the loop's pass ends, together with the others (outbox.py)."""
        assert self.transport is not None
        assert self._phase in (_IDLE, _DONE)
        self._phase, self._method = _HEAD, method
        self.status, self.raw_reason, self.fields = 0, b"", []
        self._received = False
        self._chunk_state, self._pending, self._trailer_bytes = _SIZE, b"", 0
        if self._lost:  # closed by the upstream since it was handed out
            self._error = UpstreamClosed(
                "the upstream closed the connection before answering", before_response=True
            )
            return
        if hold:
            self._held = head
            self._outbox.hold(self)
        else:
            self.transport.write(head)

    def flush(self) -> None:
        head, self._held = self._held, None
        transport = self.transport
        if head is not None and transport is not None and not transport.is_closing():
            transport.write(head)

    def listen(self, listener: Callable[[Connection], None]) -> None:
        """`wait_head` without a task, for a request without a body once `start`ed: call
        `listener(self)` once, when the response head has arrived, the exchange has failed or
        the read timeout has passed; `head_error()` then tells which."""
        self._listener = listener
        self._deadline = self._loop.time() + self._pool.read_timeout
        self._waiting_for = "a response"
        self._pool.watch(self)
        self._heard()  # `start` may have found the connection closed already

    def _heard(self) -> None:
        listener = self._listener
        if listener is not None and (self._phase != _HEAD or self._error is not None):
            self._listener = None
            self._pool.unwatch(self)
            listener(self)

    def head_error(self) -> UpstreamError | None:
        """Why the exchange has no response head to relay (what `wait_head` would raise)."""
        return self._error if self._error is not None and self._phase != _DONE else None

    def send_body(self, body: BodySource, *, chunked: bool) -> None:
        self._sender = self._loop.create_task(self._send_body(body, chunked))

    async def _send_body(self, body: BodySource, chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            while True:
                try:
                    chunk = await body.readany()
                except Exception:  # noqa: BLE001 - any failure of the client's stream ends it
                    self._abort(ClientRequestError("the request body could not be read"))
                    return
                if not chunk:
                    break
                if self._lost:
                    return  # connection_lost has recorded why
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if self._write_paused:
                    await self._drain()
            if chunked and not self._lost:
                transport.write(b"0\r\n\r\n")
        except UpstreamError as exc:
            self._abort(exc)
        finally:
            self._wake()  # the head wait now runs under the read timeout

    async def _drain(self) -> None:
        while self._write_paused and not self._lost:
            self._drain_waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(self._pool.read_timeout):
                    await self._drain_waiter
            except TimeoutError:
                raise UpstreamTimeout(
                    "the upstream did not accept the request body in time"
                ) from None
            finally:
                self._drain_waiter = None

    async def wait_head(self) -> None:
        """Wait for the response head; the read timeout runs once the body is sent."""
        while self._phase == _HEAD:
            if self._error is not None:
                raise self._error
            if self._sender is not None and not self._sender.done():
                await self._wait(None, "a response")
                continue
            # The common case, inlined from _wait: one coroutine frame less per request.
            waiter = self._loop.create_future()
            self._waiter = waiter
            self._deadline = self._loop.time() + self._pool.read_timeout
            self._waiting_for = "a response"
            self._pool.watch(self)
            try:
                await waiter
            finally:
                self._waiter = None
                self._pool.unwatch(self)
        if (error := self.head_error()) is not None:
            raise error

    @property
    def complete(self) -> bool:
        """The whole body has arrived (it may still sit in the buffer)."""
        return self._phase == _DONE

    def take_body(self) -> bytes:
        """The buffered body, once `complete`."""
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    async def read(self) -> bytes:
        """The next body chunk, b"" at the end; raises UpstreamError (timeout, close)."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered < LOW_WATER and self.transport:
                    self._reading_paused = False
                    self.transport.resume_reading()
                return chunk
            if self._phase == _DONE:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait(self._pool.read_timeout, "the rest of the response")

    def release(self) -> None:
        """The exchange is over: back to the pool if the connection is clean, else closed."""
        self._pool.release(self)

    def close(self) -> None:
        self._reusable = False
        self._pool.release(self)

    def shutdown(self) -> None:
        self._reusable = False
        self._held = None  # the exchange is abandoned: its request need not go out
        self._listener = None
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        if self.transport is not None:
            self.transport.close()

    def reusable_now(self) -> bool:
        """Whether the finished exchange left the connection fit for another."""
        return (
            self.usable
            and self._phase == _DONE
            and not self._chunks
            and (self._sender is None or self._sender.done())
        )

    def reset_for_idle(self) -> None:
        self._phase = _IDLE
        self._sender = None


# -- the pool ----------------------------------------------------------------------------------


class Pool:
    """Keep-alive connections to one upstream, at most `upstream.pool_size` open at once."""

    def __init__(
        self, upstream: Upstream, loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None
    ) -> None:
        parts = urlsplit(upstream.url)
        self.upstream = upstream
        self.loop = loop
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_header = parts.netloc
        self.tls = tls if parts.scheme == "https" else None
        self.size = upstream.pool_size
        self.connect_timeout = upstream.connect_timeout
        self.read_timeout = upstream.read_timeout
        self._idle: list[Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._watched: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    # read deadlines: one periodic sweep per pool instead of one timer per wait

    def watch(self, conn: Connection) -> None:
        self._watched.add(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def unwatch(self, conn: Connection) -> None:
        self._watched.discard(conn)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self._watched):
            conn.check_deadline(now)
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep) if self._watched else None

    def take_idle(self) -> Connection | None:
        """A pooled connection fit for reuse, if any (the hot path: no coroutine needed)."""
        if self._idle:
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()
                if conn.usable and now - conn.idle_since < IDLE_SECONDS:
                    return conn
                self._forget(conn)
        return None

    async def acquire(self, *, fresh: bool = False) -> tuple[Connection, bool]:
        """A connection and whether it was reused from the pool."""
        deadline: float | None = None
        while True:
            if not fresh:
                conn = self.take_idle()
                if conn is not None:
                    return conn, True
            if self._open < self.size:
                return await self._connect(), False
            if deadline is None:
                deadline = self.loop.time() + self.connect_timeout
            await self._wait_slot(deadline)

    async def _wait_slot(self, deadline: float) -> None:
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException as exc:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # we were handed a slot we will not use: pass it on
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("no upstream connection became free in time") from None
            raise

    async def _connect(self) -> Connection:
        self._open += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            self._open -= 1
            self._wake_one()
            raise UpstreamTimeout("the upstream did not accept a connection in time") from None
        except OSError:
            self._open -= 1
            self._wake_one()
            raise UpstreamUnreachable("the upstream could not be reached") from None
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        return conn

    def release(self, conn: Connection) -> None:
        if not conn.counted:
            return  # released before; releasing twice must not free a second slot
        if conn.reusable_now() and not self._closed:
            conn.reset_for_idle()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            self._wake_one()
        else:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        conn.shutdown()
        if conn.counted:
            conn.counted = False
            self._open -= 1
            self._wake_one()

    def discard_idle(self, conn: Connection) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
            self._forget(conn)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            self._forget(self._idle.pop())


# -- the client --------------------------------------------------------------------------------


class UpstreamClient:
    """One per application: a pool per upstream, created on first use."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}  # by upstream name: a str hash is cached
        self._tls: ssl.SSLContext | None = None

    def _pool(self, upstream: Upstream) -> Pool:
        pool = self._pools.get(upstream.name)
        if pool is None or pool.upstream is not upstream:
            if upstream.url.startswith("https:") and self._tls is None:
                self._tls = ssl.create_default_context()
            if pool is not None:
                pool.close()  # another Upstream under this name: the policy was replaced
            pool = Pool(upstream, asyncio.get_running_loop(), self._tls)
            self._pools[upstream.name] = pool
        return pool

    async def request(
        self,
        upstream: Upstream,
        method: str,
        target: str,
        headers: Sequence[Header],
        body: BodySource | None = None,
        length: int | None = None,
        *,
        fresh: bool = False,
    ) -> Connection:
        """Send a request and wait for the response head.

        `target` is sent verbatim. With a `body`, `length` is its Content-Length, or None to
        send it chunked. Raises UpstreamError; on success the caller owns the returned
        connection and must `release()` or `close()` it.
        """
        pool = self._pool(upstream)
        framing: list[Header] = []
        if length is not None:
            framing.append(("Content-Length", str(length)))
        elif body is not None:
            framing.append(("Transfer-Encoding", "chunked"))
        head = _request_bytes(pool, method, target, [*headers, *framing])
        # A pooled connection the upstream closed while idle fails before any response byte;
        # such a request is retried once on a fresh connection when repeating it is harmless.
        # (`fresh`: this is that retry, for a request first sent by `send_now`.)
        retry = body is None and method in IDEMPOTENT and not fresh
        conn = None if fresh else pool.take_idle()
        reused = conn is not None
        if conn is None:
            conn, reused = await pool.acquire(fresh=fresh)
        while True:
            try:
                conn.start(method, head, hold=body is None)
                if body is not None:
                    conn.send_body(body, chunked=length is None)
                await conn.wait_head()
            except UpstreamClosed as exc:
                conn.close()
                if not (retry and reused and exc.before_response):
                    raise
                retry = False
                conn, reused = await pool.acquire(fresh=True)
                continue
            except BaseException:
                conn.close()
                raise
            return conn

    def send_now(
        self, upstream: Upstream, method: str, target: str, headers: Sequence[Header]
    ) -> Connection | None:
        """Send a request without a body on an idle pooled connection, without waiting: the
        caller `listen`s for the answer. None when no connection is idle (`request` waits for
        one). If the connection turns out closed before any answer, an idempotent request may
        be sent again with `request(..., fresh=True)`, as `request` itself would."""
        pool = self._pool(upstream)
        head = _request_bytes(pool, method, target, headers)
        conn = pool.take_idle()
        if conn is not None:
            conn.start(method, head, hold=True)
        return conn

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _request_bytes(pool: Pool, method: str, target: str, headers: Sequence[Header]) -> bytes:
    try:
        return request_head(method, target, pool.host_header, headers)
    except ValueError:
        raise UpstreamProtocolError("a header value could not be forwarded") from None

"""One keep-alive connection to an upstream, on an asyncio protocol: writes a request head,
relays body bytes both ways with flow control, frames the response body (length, chunked, until
close) and tells its user when the answer is there, by a future (`wait_head`, `read`) or by a
callback (`listen`, for the fast front's task-free path). Pooled by `client.Pool`.
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Callable
from typing import Protocol, cast

from gateway.proxy.headers import Field, Header
from gateway.proxy.outbox import outbox
from gateway.proxy.upstream_http import (
    ClientRequestError,
    Framing,
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    _text,
    decode_fields,
    parse_head,
)

MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is refused
MAX_CHUNK_LINE = 4096  # chunk-size line with extensions, or one trailer line
MAX_TRAILER_BYTES = 16 * 1024
# Flow control on the way back: stop reading the upstream socket while this much body waits
# for a slow client, resume below the low mark. Memory per exchange is bounded by these.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}\Z")


class BodySource(Protocol):
    """Where a request body comes from (aiohttp's `request.content` is one)."""

    async def readany(self) -> bytes: ...


class Holder(Protocol):
    """What a connection needs of the pool holding it (`client.Pool`): named here so this
    module does not import the one that imports it."""

    loop: asyncio.AbstractEventLoop
    read_timeout: float

    def watch(self, conn: Connection) -> None: ...

    def unwatch(self, conn: Connection) -> None: ...

    def release(self, conn: Connection) -> None: ...

    def discard_idle(self, conn: Connection) -> None: ...


# -- one connection ----------------------------------------------------------------------------

_IDLE, _HEAD, _BODY, _DONE = range(4)
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class Connection(asyncio.Protocol):
    """One upstream connection, serving one exchange at a time; also the response handle.

    After `UpstreamClient.request` returns, `status`, `reason` and `headers` are set; read the
    body with `read()` until it returns b"", then `release()` (or `close()` on any failure).
    """

    def __init__(self, pool: Holder) -> None:
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

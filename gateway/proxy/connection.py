"""One keep-alive connection to an upstream: a thin driver that moves bytes between an asyncio
transport and the sans-IO `h1.client.ClientMachine`, with flow control both ways and the read
deadlines (checked by the pool's periodic sweep). The answer is a `Response`, handed over by a
future (`response()`) or by a callback (`listen`, the fast front's task-free path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from gateway.proxy.h1.client import ClientMachine, ClosedEarly, Event, Head
from gateway.proxy.h1.errors import ProtocolError
from gateway.proxy.h1.limits import DEFAULT_LIMITS, Limits
from gateway.proxy.headers import Header
from gateway.proxy.outbox import outbox
from gateway.proxy.response import Response
from gateway.proxy.upstream_http import (
    ClientRequestError,
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

Listener = Callable[[Response | UpstreamError], None]


class Home(Protocol):
    """What a connection needs of its pool; it calls nothing else of it."""

    def watch(self, conn: Connection) -> None:
        """Check `conn.check_deadline` until `unwatch`."""

    def unwatch(self, conn: Connection) -> None: ...

    def release(self, conn: Connection) -> None:
        """The exchange is over: keep the connection if `reusable`, else forget it."""

    def lost(self, conn: Connection) -> None:
        """The upstream closed the connection while it was idle."""

    def failed(self, conn: Connection, error: UpstreamError, listener: Listener) -> None:
        """A `listen`ed exchange failed before its answer: send it again or tell `listener`."""


class BodySource(Protocol):
    """Where a request body comes from (aiohttp's `request.content` is one)."""

    async def readany(self) -> bytes: ...


class Connection(asyncio.Protocol):
    """One upstream connection, serving one exchange at a time."""

    def __init__(
        self,
        home: Home,
        loop: asyncio.AbstractEventLoop,
        host: str,
        read_timeout: float,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._home, self._loop, self._host, self._read_timeout = home, loop, host, read_timeout
        self._h1 = ClientMachine(limits)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.counted = True  # holds one of the pool's slots until forgotten
        self.method, self.target, self.headers = "GET", "", cast(Sequence[Header], ())
        self._busy = False  # between `start` and the pool taking it back
        self._response: Response | None = None
        self._error: UpstreamError | None = None  # why the exchange failed
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._waiting_for = ""
        self._listener: Listener | None = None  # see `listen`
        self._outbox = outbox(loop)
        self._held: bytes | None = None  # a request head held until the loop's pass ends
        self._sender: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        try:
            events = self._h1.receive_eof()
            if events and exc is not None:  # a reset does not end a close-delimited body
                raise ClosedEarly("the upstream reset the connection", before_response=False)
        except ClosedEarly as early:
            self._fail(UpstreamClosed(str(early), before_response=early.before_response))
        else:
            self._events(events)
        self._wake(self._drain_waiter)
        if not self._busy:
            self._home.lost(self)
        elif self._listener is not None:
            self._heard()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake(self._drain_waiter)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h1.receive(data)
        except ProtocolError as exc:
            self._abort(UpstreamProtocolError(f"the upstream's answer was refused: {exc}"))
            events = []
        if events:
            self._events(events)
        elif not self._busy and not self._h1.reusable and self.transport is not None:
            self.transport.close()  # bytes nobody asked for, while idle
        if self._listener is not None:  # last: the listener sees the whole read's effect
            self._heard()

    def _events(self, events: list[Event]) -> None:
        response = self._response
        for event in events:
            if isinstance(event, bytes):
                assert response is not None
                response.feed(event)
            elif isinstance(event, Head):
                response = self._response = Response(self, event)
            else:  # END
                assert response is not None
                response.complete = True
        self._wake(self._waiter)

    # failing ------------------------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        if self._response is not None:
            self._response.fail(error)
        self._wake(self._waiter)

    def _abort(self, error: UpstreamError) -> None:
        self._fail(error)
        if self.transport is not None:
            self.transport.close()

    def check_deadline(self, now: float) -> None:
        """Called by the pool's sweep: fail the current wait if its deadline has passed."""
        if now >= self._deadline and (self._waiter is not None or self._listener is not None):
            self._abort(UpstreamTimeout(f"the upstream did not send {self._waiting_for} in time"))
            if self._listener is not None:
                self._heard()

    # waiting ------------------------------------------------------------------------------------

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, what: str, deadline: bool = True) -> None:
        # A deadline checked by the pool's periodic sweep costs a set insertion per wait,
        # where a timer per wait (call_later + cancel) costs a heap operation each way.
        self._waiter = waiter = self._loop.create_future()
        if deadline:
            self._deadline = self._loop.time() + self._read_timeout
            self._waiting_for = what
            self._home.watch(self)
        try:
            await waiter
        finally:
            self._waiter = None
            self._home.unwatch(self)

    async def response(self) -> Response:
        """The response head, once here; the read timeout runs once the body is sent."""
        while self._response is None:
            if self._error is not None:
                raise self._error
            await self._wait("a response", self._sender is None or self._sender.done())
        return self._response

    async def more(self) -> None:
        """For `Response.read`: wait for more of the body, its end or an error."""
        if self._error is None:
            await self._wait("the rest of the response")

    def listen(self, listener: Listener) -> None:
        """`response()` without a task, for a request without a body once `start`ed: call
        `listener` once, with the response head or the reason there is none (a failure goes
        to the pool first, which may send the request again)."""
        self._listener = listener
        self._deadline = self._loop.time() + self._read_timeout
        self._waiting_for = "a response"
        self._home.watch(self)
        self._heard()  # `start` may have found the connection closed already

    def _heard(self) -> None:
        listener = self._listener
        if listener is None:
            return
        if self._response is not None:
            self._listener = None
            self._home.unwatch(self)
            listener(self._response)
        elif self._error is not None:
            self._listener = None
            self._home.unwatch(self)
            self._home.failed(self, self._error, listener)

    # one exchange -------------------------------------------------------------------------------

    def start(
        self,
        method: str,
        target: str,
        headers: Sequence[Header],
        *,
        length: int | None = None,
        chunked: bool = False,
        hold: bool = False,
    ) -> None:
        """Begin an exchange by writing its request head (a body follows by `send_body`).

        With `hold` (nothing follows the head) it is written when the loop's pass ends,
        with the others (outbox.py). Raises UpstreamProtocolError for an unsendable head."""
        self.method, self.target, self.headers = method, target, headers
        self._busy, self._response = True, None
        if self._lost:  # closed by the upstream since it was handed out
            self._error = UpstreamClosed("the upstream closed the connection", before_response=True)
            return
        try:
            head = self._h1.start(
                method, target, self._host, headers, length=length, chunked=chunked
            )
        except ValueError:  # nothing was sent: the connection stays fit for reuse
            raise UpstreamProtocolError("a header value could not be forwarded") from None
        assert self.transport is not None
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

    def send_body(self, body: BodySource) -> None:
        self._sender = self._loop.create_task(self._send_body(body))

    async def _send_body(self, body: BodySource) -> None:
        transport = self.transport
        assert transport is not None
        try:
            while True:
                try:
                    chunk = await body.readany()
                except Exception:  # noqa: BLE001 - any failure of the client's stream ends it
                    raise ClientRequestError("the request body could not be read") from None
                if self._lost:
                    return  # connection_lost has recorded why
                try:
                    transport.writelines(self._h1.data(chunk) if chunk else (self._h1.end(),))
                except ValueError:
                    raise ClientRequestError("the request body did not match its length") from None
                if not chunk:
                    return
                while self._write_paused and not self._lost:
                    self._drain_waiter = self._loop.create_future()
                    try:
                        async with asyncio.timeout(self._read_timeout):
                            await self._drain_waiter
                    except TimeoutError:
                        msg = "the upstream did not accept the request body in time"
                        raise UpstreamTimeout(msg) from None
        except UpstreamError as exc:
            self._abort(exc)
        finally:
            self._wake(self._waiter)  # the head wait now runs under the read timeout

    # the pool's side ----------------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """Fit for another exchange: nothing failed, the last answer was read to its end."""
        response = self._response
        return (
            self._error is None
            and not self._lost
            and self._h1.reusable
            and (response is None or response.consumed)
        )

    def to_idle(self) -> None:
        self._busy, self._response, self._sender = False, None, None

    def shutdown(self) -> None:
        self._error = self._error or UpstreamClosed("the exchange was abandoned")
        self._held = None  # the exchange is abandoned: its request need not go out
        self._listener = None
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        if self.transport is not None:
            self.transport.close()

    # Stream, for the response -------------------------------------------------------------------

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def release(self) -> None:
        self._home.release(self)

    def close(self) -> None:
        self._error = self._error or UpstreamClosed("the exchange was abandoned")
        self._home.release(self)

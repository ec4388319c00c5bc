"""One keep-alive connection to an upstream: a thin driver that moves bytes between an asyncio
transport and the sans-IO `h1.client.ClientMachine`, with flow control both ways and the read
deadlines (checked by the pool's periodic sweep). The answer is a `Response`, handed over by a
future (`response()`) or by a callback (`listen`, the fast front's task-free path). The request
goes out through `upstream_request.RequestWriter`, which `Connection` builds on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gateway.proxy.h1.client import ClosedEarly, Event, Head
from gateway.proxy.h1.errors import ProtocolError
from gateway.proxy.h1.limits import DEFAULT_LIMITS, Limits
from gateway.proxy.response import Response
from gateway.proxy.upstream_http import (
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.proxy.upstream_request import RequestWriter

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


class Connection(RequestWriter):
    """One upstream connection, serving one exchange at a time."""

    def __init__(
        self,
        home: Home,
        loop: asyncio.AbstractEventLoop,
        host: str,
        read_timeout: float,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(loop, host, read_timeout, limits)
        self._home = home
        self.idle_since = 0.0
        self.counted = True  # holds one of the pool's slots until forgotten
        self._deadline = 0.0
        self._waiting_for = ""
        self._listener: Listener | None = None  # see `listen`

    # asyncio.Protocol ---------------------------------------------------------------------------

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

    # waiting ------------------------------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """Called by the pool's sweep: fail the current wait if its deadline has passed."""
        if now >= self._deadline and (self._waiter is not None or self._listener is not None):
            self._abort(UpstreamTimeout(f"the upstream did not send {self._waiting_for} in time"))
            if self._listener is not None:
                self._heard()

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

"""The request side of an upstream connection: the exchange's state, its request written, and
its failure.

A request head goes out at once, or, with nothing behind it, is held until the event loop's
pass ends and sent with the others (outbox.py). A body is read from its source and written
by a task of its own, framed by the sans-IO `h1.client.ClientMachine`; while the transport's
buffer is full (write flow control) it waits, under the read timeout.

`connection.Connection` is the driver built on it, with the response side: bytes in, the
waits, the pool's side. The two are split by what they do, not by what they hold: the
exchange's state is kept here and read by both as their own attributes, so the split costs
the request path nothing (no call, no indirection; the compiled build compiles both together).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, cast

from gateway.proxy.h1.client import ClientMachine
from gateway.proxy.h1.limits import Limits
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


class BodySource(Protocol):
    """Where a request body comes from (aiohttp's `request.content` is one)."""

    async def readany(self) -> bytes: ...


class RequestWriter(asyncio.Protocol):
    """An upstream connection's exchange as far as its request goes (see the module docstring)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, host: str, read_timeout: float, limits: Limits
    ) -> None:
        self._loop, self._host, self._read_timeout = loop, host, read_timeout
        self._h1 = ClientMachine(limits)
        self.transport: asyncio.Transport | None = None
        self.method, self.target, self.headers = "GET", "", cast(Sequence[Header], ())
        self._busy = False  # between `start` and the pool taking it back
        self._response: Response | None = None
        self._error: UpstreamError | None = None  # why the exchange failed
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None  # a task waits (Connection._wait)
        self._outbox = outbox(loop)
        self._held: bytes | None = None  # a request head held until the loop's pass ends
        self._sender: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake(self._drain_waiter)

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

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the request --------------------------------------------------------------------------------

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

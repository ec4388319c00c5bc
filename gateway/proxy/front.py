"""The fast data-plane front: a lean HTTP/1.1 server on an asyncio protocol (setting
`fast_data_plane`).

aiohttp's web server alone caps the data plane well below the throughput target, so plain
data-plane requests are served here. `FrontProtocol` is a thin driver: it moves the client's
bytes into the HTTP/1.1 state machine (`h1.server.ServerConnection`), hands each request to
the connection's `Exchanger` (front_exchange.py: decide, forward, answer), keeps the client
deadlines the state machine names, and applies flow control (`Expect: 100-continue` is
answered here, once the request is allowed). Everything else — the gateway's own surfaces,
WebSocket upgrades, any other `Expect`, CONNECT — is handed over, connection and all, to the
full aiohttp application on an internal listener (`front_splice`).

Requests on one connection are served strictly in order, one at a time; bytes of pipelined
requests wait in the state machine (reading pauses when they grow).
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import unquote

from gateway import metrics
from gateway.errors import GatewayError, RequestTimeout, protocol_error
from gateway.proxy.front_body import HIGH_WATER, LOW_WATER, RequestBody
from gateway.proxy.front_context import FrontContext
from gateway.proxy.front_exchange import Exchanger
from gateway.proxy.front_splice import Splice
from gateway.proxy.h1.errors import ProtocolError
from gateway.proxy.h1.request_head import CONTINUE
from gateway.proxy.h1.server import (
    BODY,
    CLOSED,
    END_OF_BODY,
    HEADER,
    NEED_DATA,
    PAUSED,
    RequestHead,
    ServerConnection,
)

# Closing a socket with unread bytes in it resets the connection, and a reset can destroy the
# answer before the client reads it. So a connection closed while its client may still be
# sending (a refused upload, a head over a limit) first shuts its sending side, then reads and
# drops at most this much for at most LINGER_SECONDS (nginx's lingering close, bounded).
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 2.0


class FrontProtocol(asyncio.Protocol):
    """One client connection: bytes in and out of its HTTP/1.1 state machine."""

    def __init__(self, ctx: FrontContext) -> None:
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._h1 = ServerConnection(ctx.limits)
        self._transport: asyncio.Transport | None = None
        self._out: Exchanger | None = None
        self._body: RequestBody | None = None  # the body of the request being answered
        self._splice: Splice | None = None
        self._busy = False  # a request is being answered
        self._paused = False  # reading from the client is paused
        self._in_loop = False  # inside `_advance`: an answer given at once must not recurse
        self._counted = False  # holds one of the worker's `max_connections`
        self._linger = 0  # closing: bytes still to read and drop before the close
        self._since = ctx.now  # when the running client deadline started (front_context.py)

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ctx = self._ctx
        transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        if ctx.open >= ctx.max_connections:
            metrics.connection_refused()
            transport.abort()  # at once: a flood must not cost a file descriptor for long
            return
        ctx.open += 1
        self._counted = True
        self._transport = transport
        peer = transport.get_extra_info("peername")
        peer = peer[0] if isinstance(peer, tuple) else None
        self._out = Exchanger(self, transport, peer, ctx)
        ctx.connections.add(self)
        if ctx.draining:
            self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self._ctx
        if self._counted:
            self._counted = False
            ctx.open -= 1
        ctx.connections.discard(self)
        if ctx.draining and not ctx.connections:
            ctx.drained.set()
        if self._out is not None:
            self._out.connection_lost()
        if self._splice is not None:
            self._splice.client_lost()
        if self._body is not None:
            self._body.fail(ConnectionError("the client closed the connection"))

    def eof_received(self) -> bool:
        if self._splice is not None:
            self._splice.client_eof()
            return True
        if self._out is not None:
            self._out.flush()  # returning False closes the transport: nothing held may be lost
        self._h1.receive_eof()
        self._advance()
        return self._busy  # half-open until the answer in flight is written, then closed

    def pause_writing(self) -> None:
        if self._splice is not None:
            self._splice.pause_writing()
        if self._out is not None:
            self._out.write_paused = True

    def resume_writing(self) -> None:
        if self._splice is not None:
            self._splice.resume_writing()
        if self._out is not None:
            self._out.write_paused = False
            self._out.writing_resumed()

    def data_received(self, data: bytes) -> None:
        if self._splice is not None:
            self._splice.from_client(data)
            return
        if self._linger:
            self._linger = max(0, self._linger - len(data))
            if not self._linger and self._transport is not None:
                self._transport.close()
            return
        if self._h1.receive(data) or self._body is not None:
            self._since = self._ctx.now  # a new head begins, or a body read
        self._advance()

    # the request loop ---------------------------------------------------------------------

    def _advance(self) -> None:
        """Take the state machine's events while there are any to act on."""
        if self._in_loop or self._transport is None:
            return  # an answer given at once, from inside the loop below: it goes on
        self._in_loop = True
        h1 = self._h1
        try:
            while True:
                try:
                    event = h1.next_event()
                except ProtocolError as exc:
                    self._broken(protocol_error(exc))
                    return
                if event.__class__ is bytes:
                    assert self._body is not None
                    self._body.add(event)
                elif event is END_OF_BODY:
                    assert self._body is not None
                    self._body.end()
                elif event is NEED_DATA:
                    if self._body is None or not self._body.full:
                        self.resume()
                    return
                elif event is PAUSED:
                    if h1.buffered > HIGH_WATER:
                        self.pause()  # pipelined requests wait: read no more for now
                    return
                elif event is CLOSED:
                    if not self._busy:
                        self._close()
                    return
                elif not self._start(cast(RequestHead, event)):
                    return
                elif self._busy and self._body is None and not h1.buffered:
                    return  # the usual case, answered later: the next event could only be PAUSED
        finally:
            self._in_loop = False

    def _start(self, head: RequestHead) -> bool:
        """Begin answering `head`; False if the connection was handed over."""
        if self._ctx.draining:
            self._h1.answered(False)
            self._close()
            return False
        if head.upgrade or head.expect not in (None, CONTINUE) or self._is_gateway(head.target):
            self._hand_over()
            return False
        self._busy = True
        self._body = RequestBody(self) if head.has_body else None
        assert self._out is not None
        self._out.serve(head, self._body)
        return True

    def answered(self, keep_alive: bool) -> None:
        """The exchange's news: the answer is written (`Driver.answered`)."""
        self._busy = False
        body, self._body = self._body, None
        if body is not None and not body.ended:
            body.fail(ConnectionError("the request was answered before its body was read"))
        self._since = self._ctx.now
        if self._transport is None or self._transport.is_closing():
            return
        h1 = self._h1
        unread = h1.in_body
        if not h1.answered(keep_alive and not self._ctx.draining):
            self._close(linger=unread)
            return
        if h1.buffered or unread:
            self._advance()  # pipelined bytes, or a body to drop
        elif self._paused:
            self.resume()

    def may_keep_alive(self) -> bool:
        return self._h1.can_keep_alive and not self._ctx.draining

    def _broken(self, error: GatewayError) -> None:
        """Bytes that cannot be framed: answer and close. If a request is being answered, its
        body fails instead; its answer then says close."""
        if self._busy:
            if self._body is not None:
                self._body.fail(ConnectionError("the request body's framing is broken"))
            return
        assert self._out is not None
        self._out.fail(error)
        self._close(linger=True)

    def check_deadline(self, now: float) -> None:
        if self._linger:
            if now - self._since >= LINGER_SECONDS and self._transport is not None:
                self._transport.close()
            return
        which = self._h1.deadline
        if which is None or (self._busy and which is not BODY) or self._splice is not None:
            return
        limits = self._ctx.deadlines
        limit = limits.header if which is HEADER else limits.body if which is BODY else limits.idle
        if now - self._since < limit:
            return
        assert self._out is not None
        if which is HEADER and self._h1.buffered:
            metrics.connection_closed("header-timeout")
            self._out.fail(RequestTimeout("the request head did not arrive in time"))
        elif which is BODY and self._busy:
            metrics.connection_closed("body-timeout")
            if self._body is not None:
                self._body.fail(ConnectionError("the request body did not arrive in time"))
            self._out.fail(RequestTimeout("the request body did not arrive in time"))
        else:
            metrics.connection_closed(f"{which}-timeout")
        self._close()

    # the connection -----------------------------------------------------------------------

    def _is_gateway(self, target: str) -> bool:
        path = target.split("?", 1)[0]
        ctx = self._ctx
        return ctx.is_gateway_path(path) or ("%" in path and ctx.is_gateway_path(unquote(path)))

    def _hand_over(self) -> None:
        assert self._transport is not None
        assert self._out is not None
        self._out.flush()  # the splice writes to the client directly from now on
        ctx = self._ctx
        self._splice = Splice(self._transport, self._out.peer, ctx.internal, ctx.peers)
        ctx.connections.discard(self)  # deadlines and a graceful stop are aiohttp's now
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        self._splice.start(self._h1.detach())

    def drain(self) -> None:
        """The worker is stopping: close now if idle, else after the request in flight (its
        answer says `Connection: close`)."""
        if self._splice is None and not self._busy:
            self._close()

    def _close(self, *, linger: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or self._linger:
            return
        if self._out is not None:
            self._out.flush()
        if linger and transport.can_write_eof():
            transport.write_eof()
            self._linger = LINGER_BYTES
            self._since = self._ctx.now
            if self._paused:
                self._paused = False
                transport.resume_reading()
            return
        transport.close()

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and self._h1.buffered < LOW_WATER:
            self._paused = False
            self._transport.resume_reading()

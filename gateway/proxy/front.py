"""The fast data-plane front: a lean HTTP/1.1 server on an asyncio protocol (setting
`fast_data_plane`).

aiohttp's web server alone caps the data plane well below the throughput target, so plain
data-plane requests are served here. `FrontProtocol` is a thin driver: it moves the client's
bytes into the HTTP/1.1 state machine (`h1.server.ServerConnection`), hands each request to
the connection's `Exchanger` (front_exchange.py: decide, forward, answer), notes when the
client deadlines the state machine names start, and applies flow control (`Expect:
100-continue` is answered here, once the request is allowed). Everything else — the gateway's
own surfaces, WebSocket upgrades, any other `Expect`, CONNECT — is handed over, connection and
all, to the full aiohttp application on an internal listener (`front_splice`). The connection
around the requests (its count, deadlines, lingering close, the hand-over) is
`front_connection.ClientConnection`, which `FrontProtocol` builds on.

Requests on one connection are served strictly in order, one at a time; bytes of pipelined
requests wait in the state machine (reading pauses when they grow).
"""

from __future__ import annotations

from typing import cast

from gateway.errors import GatewayError, protocol_error
from gateway.proxy.front_body import HIGH_WATER, RequestBody
from gateway.proxy.front_connection import ClientConnection
from gateway.proxy.h1.errors import ProtocolError
from gateway.proxy.h1.request_head import CONTINUE
from gateway.proxy.h1.server import CLOSED, END_OF_BODY, NEED_DATA, PAUSED, RequestHead


class FrontProtocol(ClientConnection):
    """One client connection: bytes in and out of its HTTP/1.1 state machine."""

    # asyncio.Protocol ---------------------------------------------------------------------

    def eof_received(self) -> bool:
        if self._splice is not None:
            self._splice.client_eof()
            return True
        if self._out is not None:
            self._out.flush()  # returning False closes the transport: nothing held may be lost
        self._h1.receive_eof()
        self._advance()
        return self._busy  # half-open until the answer in flight is written, then closed

    def data_received(self, data: bytes) -> None:
        if self._splice is not None:
            self._splice.from_client(data)
            return
        if self._linger is not None:
            self._linger.received(len(data))
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
        poll = self._ctx.busy_poll
        if poll is not None:
            poll.tick()
        self._body = RequestBody(self) if head.has_body else None
        assert self._out is not None
        self._out.serve(head, self._body)
        return True

    def answered(self, keep_alive: bool) -> None:
        """The exchange's news: the answer is written (`Driver.answered`)."""
        self._busy = False
        poll = self._ctx.busy_poll
        if poll is not None:
            poll.tick()
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

"""A client connection of the fast front, apart from the requests on it: its place among the
worker's connections (`max_connections`, the count, a graceful stop), the flow control of its
transport, its client deadlines and lingering close (front_deadlines.py), and its hand-over,
whole, to the aiohttp application (front_splice.py).

`front.FrontProtocol`, the class the front serves with, is the request loop built on it. The
two are split by what they do, not by what they hold: the state is kept here, where the
connection's life needs all of it, and the request loop reads and writes it as its own
attributes, so the split costs the request path nothing (no call, no indirection; the
compiled build compiles both together).
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import unquote

from gateway import metrics
from gateway.proxy.front_body import LOW_WATER, RequestBody
from gateway.proxy.front_context import FrontContext
from gateway.proxy.front_deadlines import Lingering, expired, time_out
from gateway.proxy.front_exchange import Exchanger
from gateway.proxy.front_splice import Splice
from gateway.proxy.h1.server import ServerConnection


class ClientConnection(asyncio.Protocol):
    """One client connection, before and after its requests (see the module docstring)."""

    def __init__(self, ctx: FrontContext) -> None:
        self._ctx = ctx
        self._h1 = ServerConnection(ctx.limits)
        self._transport: asyncio.Transport | None = None
        self._out: Exchanger | None = None
        self._body: RequestBody | None = None  # the body of the request being answered
        self._splice: Splice | None = None
        self._busy = False  # a request is being answered
        self._paused = False  # reading from the client is paused
        self._in_loop = False  # inside `_advance`: an answer given at once must not recurse
        self._counted = False  # holds one of the worker's `max_connections`
        self._linger: Lingering | None = None  # closing: what the client sends is dropped
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

    # for the exchange (`front_exchange.Driver`) -------------------------------------------

    def answered(self, keep_alive: bool) -> None:
        """The answer is written: the request loop's to act on (front.py)."""
        raise NotImplementedError

    def may_keep_alive(self) -> bool:
        return self._h1.can_keep_alive and not self._ctx.draining

    # the connection's end -----------------------------------------------------------------

    def check_deadline(self, now: float) -> None:
        """For the worker's sweep: close the connection once its client deadline has passed."""
        if self._linger is not None:
            self._linger.check(now)
            return
        which = self._h1.deadline
        if (
            which is None
            or self._splice is not None
            or not expired(which, self._busy, now - self._since, self._ctx.deadlines)
        ):
            return
        assert self._out is not None
        time_out(which, self._busy, self._h1.buffered, self._out, self._body)
        self._close()

    def drain(self) -> None:
        """The worker is stopping: close now if idle, else after the request in flight (its
        answer says `Connection: close`)."""
        if self._splice is None and not self._busy:
            self._close()

    def _close(self, *, linger: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing() or self._linger is not None:
            return
        if self._out is not None:
            self._out.flush()
        if linger and transport.can_write_eof():
            self._linger = Lingering(transport, self._ctx.now, paused=self._paused)
            self._paused = False  # the client is read to the end of the lingering
            return
        transport.close()

    # the hand-over ------------------------------------------------------------------------

    def _is_gateway(self, target: str) -> bool:
        query = target.find("?")
        path = target if query < 0 else target[:query]
        ctx = self._ctx
        exact, prefixes = ctx.exact, ctx.prefixes
        return _gateway_path(exact, prefixes, path) or (
            "%" in path and _gateway_path(exact, prefixes, unquote(path))
        )

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

    # reading ------------------------------------------------------------------------------

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and self._h1.buffered < LOW_WATER:
            self._paused = False
            self._transport.resume_reading()


def _gateway_path(exact: frozenset[str], prefixes: tuple[str, ...], path: str) -> bool:
    """Whether `path` is one of the gateway's own (FrontContext `exact`, `prefixes`)."""
    return path in exact or (bool(prefixes) and path.startswith(prefixes))

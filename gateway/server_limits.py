"""Deadlines and caps for aiohttp's HTTP servers: what a hostile client may cost in time and
file descriptors (settings `client_header_timeout`, `client_body_timeout`, `keepalive_timeout`,
`max_connections`, `max_header_count`).

aiohttp brings the idle keep-alive deadline and the header count (`keepalive_timeout`,
`max_headers` of its `RequestHandler`); the rest is `LimitedHandler`, a `RequestHandler` that
also

- gives a request head `client_header_timeout` from its first byte, then answers 408 and
  closes (a new connection that sends nothing in that time is closed without an answer);
- closes a connection whose request body sends nothing for `client_body_timeout` while the
  gateway waits for it (a gateway that is not reading, e.g. pushing back on a slow upstream,
  does not count against the client);
- closes a connection at once, and counts it, while `max_connections` are already open;
- answers 431 rather than 400 when a head has more than `max_header_count` fields;
- judges the request line of a connection's first request as soon as it is whole: an HTTP/0.9
  line (no version; aiohttp would wait for a head that never comes) is a 400, a version other
  than 1.0 and 1.1 a 505, and the connection closes (`http11_only` refuses the same for later
  requests, once aiohttp has parsed them);
- reads and drops at most `LINGER_BYTES` of a body left unread by an answer (aiohttp drains
  for up to ten seconds, however much arrives), then closes.

Both deadlines keep one timer per connection and move a deadline field, as aiohttp's own
keep-alive does: a request on a busy connection costs a clock read, not a timer. Used for the
public socket when aiohttp serves it (`fast_data_plane: false`) and for the internal listener
the fast front hands connections over to (`proxy/front_server.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway import metrics
from gateway.errors import GatewayError, NotImplementedHere, VersionNotSupported
from gateway.proxy.render import problem_response
from gateway.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's parser reports a head over `max_headers` fields as this 400.
_TOO_MANY_FIELDS = "Too many headers received"
_TIMEOUT_TEXT = b"408: Request Timeout"
LINGER_BYTES = 1024 * 1024  # as the fast front (proxy/front_deadlines.py)
_MAX_REQUEST_LINE = 8 * 1024  # as h1.limits.Limits.max_request_line


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The client-side deadlines (seconds) and caps of one server."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    max_connections: int = 10_000
    max_header_count: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(
            settings.client_header_timeout,
            settings.client_body_timeout,
            settings.keepalive_timeout,
            settings.max_connections,
            settings.max_header_count,
        )


@dataclass(slots=True)
class ConnectionGate:
    """The open connections of one server, against its cap."""

    limits: ClientLimits
    open: int = 0


class LimitedHandler(RequestHandler):
    """aiohttp's connection handler with the deadlines and caps of the module docstring."""

    def __init__(self, manager: web.Server, gate: ConnectionGate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._admitted = False
        self._head_seen = False  # any byte of a request head has arrived on this connection
        self._head_deadline = 0.0  # 0: no head being timed
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the request body still arriving, if any
        self._body_deadline = 0.0
        self._body_timer: asyncio.TimerHandle | None = None
        self._first_line: bytes | None = b""  # the first request line until judged, then None
        self._dropped = 0  # body bytes read after the answer, to be dropped
        self._answered = False  # the request of the body being read has its answer

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's signature
        """A graceful stop within `timeout` in all. aiohttp waits `timeout` for the request in
        progress and then, having cancelled it, as long again: a drain would last twice
        `shutdown_timeout`. What still runs at the deadline is cut here instead. (To aiohttp
        a timeout of 0 means none: the smallest positive one cuts at once.)"""
        if timeout is None:
            await super().shutdown(None)
            return
        budget = max(timeout, 0.001)
        try:
            async with asyncio.timeout(budget):
                await super().shutdown(budget)
        except TimeoutError:
            if self._task_handler is not None:
                self._task_handler.cancel()
            self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        if gate.open >= gate.limits.max_connections:
            # Refused before aiohttp sees it: no handler task, no parser state, no timers.
            metrics.connection_refused()
            transport.close()
            return
        gate.open += 1
        self._admitted = True
        super().connection_made(transport)
        self._time_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._gate.open -= 1
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._upgraded or self._payload_parser is not None:
            super().data_received(data)  # a WebSocket: its own heartbeats time it
            return
        if self._first_line is not None and not self._judge_first_line(data):
            return
        body = self._body
        if body is not None:
            if body.is_eof():
                self._body = body = None
            else:
                self._body_deadline = self._loop.time() + self._gate.limits.body_timeout
                if self._answered:
                    # Answered already: aiohttp reads the rest only to drop it. Bounded.
                    self._dropped += len(data)
                    if self._dropped > LINGER_BYTES:
                        self.force_close()
                        return
        if body is None and data:
            self._head_seen = True
            if not self._head_deadline:
                self._time_head()
        count = self._request_count
        super().data_received(data)
        if self._request_count != count and self._messages:
            # A head (or a parse error) is complete: stop its clock; time its body if any.
            self._head_deadline = 0.0
            payload = self._messages[-1][1]
            self._dropped = 0
            self._answered = False
            if not payload.is_eof():
                self._body = payload
                self._body_deadline = self._loop.time() + self._gate.limits.body_timeout
                if self._body_timer is None:
                    self._body_timer = self._loop.call_at(self._body_deadline, self._check_body)

    def _process_keepalive(self) -> None:
        if self._head_deadline and self._head_seen:
            # A head has begun: `client_header_timeout` times it, not the keep-alive.
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        self._answered = True  # what still arrives of its body is only read to be dropped
        return result

    def _judge_first_line(self, data: bytes) -> bool:
        """Whether the connection's first request line (once whole) may go to aiohttp."""
        assert self._first_line is not None
        line = (self._first_line + data).lstrip(b"\r\n")
        end = line.find(b"\r\n")
        if end < 0:
            self._first_line = line[:_MAX_REQUEST_LINE]
            return True
        self._first_line = None
        version = line[line.rfind(b" ", 0, end) + 1 : end]
        if version in (b"HTTP/1.1", b"HTTP/1.0") or self.transport is None:
            return True
        if version.startswith(b"HTTP/"):
            self.transport.write(_plain_answer(505, b"505: HTTP Version Not Supported"))
        else:
            self.transport.write(_plain_answer(400, b"400: Bad Request"))
        self.force_close()
        return False

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400 and isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_FIELDS:
            status = 431
        return super().handle_error(request, status, exc, message)

    def _time_head(self) -> None:
        self._head_deadline = self._loop.time() + self._gate.limits.header_timeout
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(self._head_deadline, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if not deadline or self.transport is None or self._force_close:
            return
        if self._loop.time() < deadline:  # a later head: its own deadline
            self._head_timer = self._loop.call_at(deadline, self._check_head)
            return
        self._head_deadline = 0.0
        if not self._head_seen:
            self.force_close()  # nothing was ever sent: nobody to answer
        elif self._waiter is not None and not self._waiter.done():
            self.transport.write(_request_timeout())  # nothing else in flight: ours to write
            self.force_close()
        else:
            self.close()  # a pipelined request is still being answered: then close

    def _check_body(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof() or self.transport is None:
            self._body = None
            return
        now = self._loop.time()
        if now < self._body_deadline:
            self._body_timer = self._loop.call_at(self._body_deadline, self._check_body)
            return
        if self._reading_paused or body._waiter is None:
            # The gateway is not waiting for the body (it is busy, or pushing back): the
            # client's silence is not a stall. Look again one timeout later.
            self._body_deadline = now + self._gate.limits.body_timeout
            self._body_timer = self._loop.call_at(self._body_deadline, self._check_body)
            return
        self.force_close()


def _request_timeout() -> bytes:
    return _plain_answer(408, _TIMEOUT_TEXT)


def _plain_answer(status: int, text: bytes) -> bytes:
    """An answer written by the connection itself, before aiohttp has a request to answer."""
    reason = HTTPStatus(status).phrase.encode()
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Date: %s\r\n"
        b"Connection: close\r\n\r\n%s"
    ) % (status, reason, len(text), formatdate(usegmt=True).encode(), text)


class _LimitedServer(web.Server):
    """aiohttp's `Server` building `LimitedHandler`s for one gate."""

    def __init__(self, plain: web.Server, gate: ConnectionGate) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self.gate = gate

    def __call__(self) -> RequestHandler:
        return LimitedHandler(self, self.gate, loop=self._loop, **self._kwargs)


class LimitedRunner(web.AppRunner):
    """An `AppRunner` whose server applies `limits` to every connection it accepts."""

    def __init__(self, app: web.Application, limits: ClientLimits, **kwargs: Any) -> None:
        # The gateway writes its own access lines (gateway/observing.py, setting
        # `access_log`), with the route, outcome, key id and durations: aiohttp's are off.
        kwargs["access_log"] = None
        super().__init__(
            app,
            keepalive_timeout=limits.keepalive_timeout,
            max_headers=limits.max_header_count,
            **kwargs,
        )
        self.gate = ConnectionGate(limits)

    def shutdown_within(self, seconds: float) -> None:
        """How long `cleanup()` lets requests in flight finish (what is left of a drain that
        began elsewhere)."""
        self._shutdown_timeout = seconds

    async def _make_server(self) -> web.Server:
        # aiohttp offers no hook for the handler class: wrap the server it builds (which
        # also starts the application) in one that builds ours, with the same arguments.
        return _LimitedServer(await super()._make_server(), self.gate)


@web.middleware
async def http11_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What aiohttp's parser takes and the gateway does not serve, refused before any route
    (the fast front refuses the same in its own HTTP/1.1 core): a version other than 1.0 and
    1.1, and CONNECT. The connection closes after the answer."""
    error: GatewayError | None = None
    if request.version not in ((1, 1), (1, 0)):
        error = VersionNotSupported("only HTTP/1.0 and HTTP/1.1 are served here")
    elif request.method == "CONNECT":
        error = NotImplementedHere("CONNECT is not supported by this gateway")
    if error is None:
        return await handler(request)
    response = problem_response(error)
    response.force_close()
    return response

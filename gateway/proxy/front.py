"""The fast data-plane front: a lean HTTP/1.1 server on an asyncio protocol (setting
`fast_data_plane`).

aiohttp's web server alone caps the data plane well below the throughput target, so plain
data-plane requests are served here: parse the head (llhttp), run the same decision as the
aiohttp handler (`handler.decide_now`, then `finish`), forward through the same upstream client
and header rewriting, and write the upstream's answer straight to the socket. Everything else — the
gateway's own surfaces, WebSocket upgrades, `Expect`, CONNECT — is handed over, connection and
all, to the full aiohttp application on an internal listener (`front_splice`), so those keep
every existing behaviour.

Requests on one connection are served strictly in order, one at a time; bytes of pipelined
requests wait in a buffer (reading pauses when it grows) and each is decided independently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote

from gateway.errors import BadRequest, GatewayError, problem_parts, upstream_error
from gateway.proxy.client import IDEMPOTENT
from gateway.proxy.connection import Connection
from gateway.proxy.decision import Allowed, Decision, NeedsLookup, Refused
from gateway.proxy.forward import Forwarder
from gateway.proxy.forward import _within as within_networks
from gateway.proxy.front_body import HIGH_WATER, LOW_WATER, RequestBody
from gateway.proxy.front_http import (
    MAX_HEAD_BYTES,
    BadRequestHead,
    RequestHead,
    parse_request_head,
    relayed_head,
    render_head,
)
from gateway.proxy.front_splice import Splice
from gateway.proxy.handler import decide_now, finish
from gateway.proxy.headers import Field, Header, Origin, request_headers, response_fields
from gateway.proxy.outbox import outbox
from gateway.proxy.upstream_http import UpstreamClosed, UpstreamError
from gateway.services import Services

log = logging.getLogger("gateway.proxy")


@dataclass(slots=True)
class FrontContext:
    """What every connection of one worker shares."""

    services: Services
    forwarder: Forwarder
    internal: tuple[str, int]  # the aiohttp listener connections are handed over to
    exact: frozenset[str]  # the gateway's own paths ...
    prefixes: tuple[str, ...]  # ... and path prefixes (from the aiohttp router)
    peers: dict[int, str] = field(default_factory=dict)  # internal local port -> client address
    access_log: logging.Logger | None = None  # setting `access_log`: one line per request
    connections: set[FrontProtocol] = field(default_factory=set)  # open, for a graceful stop
    draining: bool = False  # stopping: answer what is in flight, take no new requests
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # draining, none left open

    def is_gateway_path(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))


class FrontProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, ctx: FrontContext) -> None:
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._buf = b""
        self._busy = False
        self._body: RequestBody | None = None
        self._splice: Splice | None = None
        self._paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._closing = False
        self._lost = False
        self._head_only = False  # the request in flight is a HEAD: answers carry no body
        self._task: asyncio.Task[None] | None = None
        self._starting = False  # inside `_next`: a request answered at once must not recurse
        self._waiting: tuple[RequestHead, Allowed] | None = None  # sent by `_answer_now`
        self._outbox = outbox(self._loop)
        self._held: list[bytes] = []  # answers held until the loop's pass ends (outbox.py)
        self._answered = (0, 0)  # status and body bytes of the last answer, for the access log

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None
        self._ctx.connections.add(self)
        if self._ctx.draining:
            self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        ctx = self._ctx
        ctx.connections.discard(self)
        if ctx.draining and not ctx.connections:
            ctx.drained.set()
        self._held.clear()
        if self._splice is not None:
            self._splice.client_lost()
        if self._body is not None and not self._body.done:
            self._body.fail(ConnectionError("the client closed the connection"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def eof_received(self) -> bool:
        self.flush()  # returning False below closes the transport: nothing held may be lost
        if self._splice is not None:
            self._splice.client_eof()
            return True
        if self._body is not None and not self._body.done:
            if self._body.discarding:
                return False  # nothing left to answer
            self._body.fail(ConnectionError("the request body ended early"))
        if self._busy:
            self._closing = True  # answer the request in flight, then close
            return True
        return False

    def pause_writing(self) -> None:
        if self._splice is not None:
            self._splice.pause_writing()
        self._write_paused = True

    def resume_writing(self) -> None:
        if self._splice is not None:
            self._splice.resume_writing()
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._splice is not None:
            self._splice.from_client(data)
            return
        body = self._body
        if body is not None and not body.done and body.error is None:
            data = body.feed(data)
            if body.discarding and body.ended():
                self._finish(body.error is None)
            if not data:
                return
        self._buf = self._buf + data if self._buf else data
        if not self._busy:
            self._next()
        elif len(self._buf) > HIGH_WATER:
            self.pause()

    def drain(self) -> None:
        """The worker is stopping: close now if idle, else after the request in flight (its
        answer says `Connection: close`)."""
        if self._splice is not None or self._transport is None or self._lost:
            return
        self._closing = True
        if not self._busy:
            self._close()

    # writing ------------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        """Write now, after anything held (the order on the connection never changes)."""
        assert self._transport is not None
        if self._held:
            self.flush()
        self._transport.write(data)

    def _hold(self, data: bytes) -> None:
        """Write at the end of the loop's pass: for an answer with nothing behind it."""
        if not self._held:
            self._outbox.hold(self)
        self._held.append(data)

    def flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held = []
        transport = self._transport
        if transport is not None and not self._lost and not transport.is_closing():
            transport.write(held[0] if len(held) == 1 else b"".join(held))

    def _close(self) -> None:
        assert self._transport is not None
        self.flush()
        self._transport.close()

    # flow control -------------------------------------------------------------------------------

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and len(self._buf) < LOW_WATER:
            self._paused = False
            self._transport.resume_reading()

    async def _drained(self) -> None:
        while self._write_paused and not self._lost:
            self._drain = self._loop.create_future()
            await self._drain

    # requests -----------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start the buffered requests, one at a time, while their heads are complete."""
        if self._starting:
            return  # a request answered at once, from inside `_start`: the loop below goes on
        self._starting = True
        try:
            # Goes on only while requests are answered at once (refusals, mostly).
            while self._buf and not self._busy and self._start():
                pass
        finally:
            self._starting = False

    def _start(self) -> bool:
        """Start the first buffered request; False if there is none yet (or no more)."""
        if self._closing or self._lost or self._transport is None:
            return False
        buf = self._buf.lstrip(b"\r\n") if self._buf[:1] in (b"\r", b"\n") else self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD_BYTES:
            self._buf = buf
            if len(buf) > MAX_HEAD_BYTES:
                self._fail_and_close(BadRequest("the request head is too large"))
            else:
                self.resume()  # paused while earlier requests were served: read the rest
            return False
        block = buf[: end + 4]
        try:
            head = parse_request_head(block)
        except BadRequestHead as exc:
            self._fail_and_close(BadRequest(str(exc), code="bad-request"))
            return False
        if head.upgrade or head.expect or self._is_gateway(head.target):
            self._hand_over(buf)
            return False
        rest = buf[end + 4 :]
        if head.chunked or head.length > 0:
            self._body = RequestBody(self, head.length, head.chunked)
            rest = self._body.feed(rest) if rest else b""
        else:
            self._body = None
        self._buf = rest
        self._busy = True
        self._head_only = head.method == "HEAD"
        self._answered = (0, 0)  # a request that gets no answer logs status 0
        decided = None
        if self._body is None:
            # The common request: no body, a key in the in-process cache, an idle upstream
            # connection. It is decided and sent from here and answered from the upstream
            # connection's callback (`_heard`), with no task, future or coroutine for it.
            try:
                decided = decide_now(self._ctx.services, head.method, head.target, head.values)
                if not isinstance(decided, NeedsLookup) and self._answer_now(head, decided):
                    return True
            except Exception:  # noqa: BLE001 - as in `_serve`
                self._crashed(head)
                return True
        self._spawn(head, self._exchange(head, decided))
        return True

    def _is_gateway(self, target: str) -> bool:
        path = target.split("?", 1)[0]
        ctx = self._ctx
        return ctx.is_gateway_path(path) or ("%" in path and ctx.is_gateway_path(unquote(path)))

    def _hand_over(self, data: bytes) -> None:
        assert self._transport is not None
        self.flush()  # the splice writes to the client directly from now on
        self._buf = b""
        self._splice = Splice(self._transport, self._peer, self._ctx.internal, self._ctx.peers)
        self._ctx.connections.discard(self)  # a graceful stop is the aiohttp side's now
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        self._splice.start(data)

    def _fail_and_close(self, error: GatewayError) -> None:
        self._head_only = False
        status, headers, body = problem_parts(error)
        self._write_answer(status, headers, body, keep_alive=False)

    def _spawn(self, head: RequestHead, work: Coroutine[Any, Any, bool]) -> None:
        # Kept referenced: the loop holds tasks only weakly.
        self._task = self._loop.create_task(self._serve(head, work))

    async def _serve(self, head: RequestHead, work: Coroutine[Any, Any, bool]) -> None:
        try:
            keep_alive = await work
        except Exception:  # noqa: BLE001 - never a traceback to the client; logged without keys
            self._crashed(head)
            return
        self._done(head, keep_alive)

    def _crashed(self, head: RequestHead) -> None:
        log.exception("unexpected error serving %s", head.method)
        if not self._lost:
            status, headers, body = problem_parts(
                GatewayError("an unexpected error occurred", code="internal-error")
            )
            self._write_answer(status, headers, body, keep_alive=False)
        self._done(head, False)

    def _done(self, head: RequestHead, keep_alive: bool) -> None:
        """The request is answered (or abandoned): log it, then on to the next."""
        if self._ctx.access_log is not None:
            self._log_access(self._ctx.access_log, head)
        self._finish(keep_alive and head.keep_alive)

    def _log_access(self, logger: logging.Logger, head: RequestHead) -> None:
        """aiohttp's default access-log line (`%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"`),
        so both servers log alike. Like aiohttp's, it shows the request target as sent."""
        status, size = self._answered
        referer = agent = "-"
        for name, value in head.headers:
            if len(name) in (7, 10):
                lower = name.lower()
                if lower == "referer":
                    referer = value
                elif lower == "user-agent":
                    agent = value
        logger.info(
            '%s [%s] "%s %s HTTP/1.1" %d %d "%s" "%s"',
            self._peer or "-",
            time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            head.method,
            head.target,
            status,
            size,
            referer,
            agent,
        )

    def _finish(self, keep_alive: bool) -> None:
        body = self._body
        if body is not None and not body.done:
            if keep_alive and body.error is None and not self._closing and not self._lost:
                # Answered before the body was read (a refusal, an early upstream answer):
                # read the rest and drop it, as aiohttp does, so the connection stays in step
                # and the client is not reset while it still sends.
                body.discard()
                return
            keep_alive = False  # the body's unread rest would be taken for the next request
        self._body = None
        self._busy = False
        if self._transport is None or self._lost:
            return
        if not keep_alive or self._closing:
            self._closing = True
            self._close()
            return
        self.resume()
        if self._buf:
            self._next()

    def _answer_now(self, head: RequestHead, decided: Allowed | Refused) -> bool:
        """Answer a refusal, or send an allowed request on an idle upstream connection; False
        when there is none (the request then takes a task, as one with a body does)."""
        if isinstance(decided, Refused):
            self._done(head, self._refuse(decided))
            return True
        path, headers = self._upstream_request(head, decided)
        try:
            conn = self._ctx.forwarder._client.send_now(
                decided.upstream, head.method, path, headers
            )
        except UpstreamError as exc:
            self._done(head, self._upstream_failed(exc, decided))
            return True
        if conn is None:
            return False
        self._waiting = (head, decided)
        conn.listen(self._heard)
        return True

    def _heard(self, response: Connection) -> None:
        """The upstream connection's news for a request sent by `_answer_now`."""
        assert self._waiting is not None
        head, decided = self._waiting
        self._waiting = None
        try:
            error = response.head_error()
            if error is None:
                if response.complete:
                    self._done(head, self._relay_whole(head, response))
                else:  # a body still to come: streamed by a task
                    self._spawn(head, self._relay(head, response))
                return
            response.close()
            if (
                isinstance(error, UpstreamClosed)
                and error.before_response
                and head.method in IDEMPOTENT
            ):
                # An idle connection the upstream had closed: once more on a new one.
                self._spawn(head, self._exchange(head, decided, fresh=True))
                return
            self._done(head, self._upstream_failed(error, decided))
        except Exception:  # noqa: BLE001 - as in `_serve`
            response.close()
            self._crashed(head)

    async def _exchange(
        self, head: RequestHead, decided: Decision | None, *, fresh: bool = False
    ) -> bool:
        """Decide (unless `decided` already; resuming it if it needs a lookup) and forward one
        request; whether the connection may serve another."""
        services = self._ctx.services
        result = decided
        if result is None:
            result = decide_now(services, head.method, head.target, head.values)
        if isinstance(result, NeedsLookup):
            result = await finish(services, result, head.values, self._peer)
        if isinstance(result, Refused):
            return self._refuse(result)
        path, out_headers = self._upstream_request(head, result)
        length = head.length if head.length >= 0 and not head.chunked else None
        try:
            response = await self._ctx.forwarder._client.request(
                result.upstream, head.method, path, out_headers, self._body, length, fresh=fresh
            )
        except UpstreamError as exc:
            return self._upstream_failed(exc, result)
        return await self._relay(head, response)

    def _upstream_request(self, head: RequestHead, allowed: Allowed) -> tuple[str, list[Header]]:
        """The upstream request target and headers for an allowed request."""
        forwarder = self._ctx.forwarder
        # The Forwarder's pool, identity cache and trusted-proxy list are shared on purpose:
        # one set of upstream connections per worker, whichever server took the request.
        trusted = (
            bool(forwarder._trusted)
            and self._peer is not None
            and within_networks(self._peer, forwarder._trusted)
        )
        headers = request_headers(
            head.headers,
            Origin(self._peer, "http", head.host, trusted),
            forwarder._identity(allowed.principal, allowed.upstream),
        )
        target = allowed.target
        return (target.path + "?" + target.query if target.query else target.path), headers

    def _refuse(self, refusal: Refused) -> bool:
        status, out, data = problem_parts(refusal.error, refusal.instance)
        return self._write_answer(status, out, data, keep_alive=True)

    def _upstream_failed(self, exc: UpstreamError, allowed: Allowed) -> bool:
        log.warning("upstream %s: %s", allowed.upstream.name, exc)
        status, out, data = problem_parts(upstream_error(exc), allowed.target.path)
        return self._write_answer(status, out, data, keep_alive=True)

    def _response_head(self, head: RequestHead, response: Connection) -> tuple[bytes, bool]:
        """The head to relay, and whether the connection may serve another request after."""
        framing = response.framing
        keep_alive = framing != "close"
        extra: list[Field] = []
        if framing == "chunked":
            extra.append((b"Transfer-Encoding", b"chunked"))
        if not keep_alive or not head.keep_alive or self._closing:
            extra.append((b"Connection", b"close"))
        out = relayed_head(
            response.status, response.raw_reason, response_fields(response.fields), extra
        )
        return out, keep_alive

    def _relay_whole(self, head: RequestHead, response: Connection) -> bool:
        """Relay an answer that arrived whole (the usual small one) in one write."""
        out, keep_alive = self._response_head(head, response)
        data = response.take_body()
        response.release()
        self._answered = (response.status, len(data))
        if response.framing == "chunked":
            end = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n"
            self._hold(out + end)
        else:
            self._hold(out + data if data else out)
        return keep_alive

    async def _relay(self, head: RequestHead, response: Connection) -> bool:
        """Write the upstream's answer, keeping its framing; whether to keep the connection."""
        if response.complete:
            return self._relay_whole(head, response)
        transport = self._transport
        assert transport is not None
        out, keep_alive = self._response_head(head, response)
        framing = response.framing
        self._send(out)
        sent = 0
        self._answered = (response.status, 0)
        try:
            while chunk := await response.read():
                sent += len(chunk)
                self._answered = (response.status, sent)
                if self._lost:
                    response.close()
                    return False
                if framing == "chunked":
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)  # after `_send(out)`: nothing is held here
                if self._write_paused:
                    await self._drained()
        except UpstreamError as exc:
            # The head is out: the only honest signal left is to cut the client connection.
            log.warning("upstream failed mid-response: %s", exc)
            response.close()
            return False
        except BaseException:
            response.close()
            raise
        if framing == "chunked":
            transport.write(b"0\r\n\r\n")
        response.release()
        return keep_alive

    def _write_answer(
        self, status: int, headers: dict[str, str], body: bytes, *, keep_alive: bool
    ) -> bool:
        if self._transport is None or self._lost:
            return False
        pairs: list[Header] = [*headers.items(), ("Content-Length", str(len(body)))]
        if not keep_alive:
            pairs.append(("Connection", "close"))
        out = render_head(status, None, pairs)
        data = out if self._head_only else out + body
        self._answered = (status, 0 if self._head_only else len(body))
        if keep_alive:
            self._hold(data)
            return True
        self._send(data)
        self._closing = True
        if not self._busy:
            self._close()
        return False

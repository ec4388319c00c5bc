"""The fast data-plane front: a lean HTTP/1.1 server on an asyncio protocol (setting
`fast_data_plane`).

aiohttp's web server alone caps the data plane well below the throughput target, so plain
data-plane requests are served here: parse the head (llhttp), run the same decision as the
aiohttp handler (`handler.decide`), forward through the same upstream client and header
rewriting, and write the upstream's answer straight to the socket. Everything else — the
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import unquote

from gateway.errors import BadGateway, BadRequest, GatewayError, GatewayTimeout
from gateway.proxy.client import ClientRequestError, Connection, UpstreamError, UpstreamTimeout
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
from gateway.proxy.handler import Refusal, decide, problem_parts
from gateway.proxy.headers import Field, Header, Origin, request_headers, response_fields
from gateway.proxy.outbox import outbox
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
        self._outbox = outbox(self._loop)
        self._held: list[bytes] = []  # answers held until the loop's pass ends (outbox.py)
        self._answered = (0, 0)  # status and body bytes of the last answer, for the access log

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
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
        """Start the next buffered request, if its head is complete."""
        if self._closing or self._lost or self._transport is None:
            return
        buf = self._buf.lstrip(b"\r\n") if self._buf[:1] in (b"\r", b"\n") else self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD_BYTES:
            self._buf = buf
            if len(buf) > MAX_HEAD_BYTES:
                self._fail_and_close(BadRequest("the request head is too large"))
            return
        block = buf[: end + 4]
        try:
            head = parse_request_head(block)
        except BadRequestHead as exc:
            self._fail_and_close(BadRequest(str(exc), code="bad-request"))
            return
        if head.upgrade or head.expect or self._is_gateway(head.target):
            self._hand_over(buf)
            return
        rest = buf[end + 4 :]
        if head.chunked or head.length > 0:
            self._body = RequestBody(self, head.length, head.chunked)
            rest = self._body.feed(rest) if rest else b""
        else:
            self._body = None
        self._buf = rest
        self._busy = True
        self._head_only = head.method == "HEAD"
        # Kept referenced: the loop holds tasks only weakly.
        self._task = self._loop.create_task(self._serve(head))

    def _is_gateway(self, target: str) -> bool:
        path = target.split("?", 1)[0]
        ctx = self._ctx
        return ctx.is_gateway_path(path) or ("%" in path and ctx.is_gateway_path(unquote(path)))

    def _hand_over(self, data: bytes) -> None:
        assert self._transport is not None
        self.flush()  # the splice writes to the client directly from now on
        self._buf = b""
        self._splice = Splice(self._transport, self._peer, self._ctx.internal, self._ctx.peers)
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        self._splice.start(data)

    def _fail_and_close(self, error: GatewayError) -> None:
        self._head_only = False
        status, headers, body = problem_parts(error)
        self._write_answer(status, headers, body, keep_alive=False)

    async def _serve(self, head: RequestHead) -> None:
        keep_alive = head.keep_alive
        self._answered = (0, 0)  # a request that gets no answer logs status 0
        try:
            keep_alive = await self._exchange(head) and keep_alive
        except Exception:  # never a traceback to the client; logged without keys
            log.exception("unexpected error serving %s", head.method)
            if not self._lost:
                status, headers, body = problem_parts(
                    GatewayError("an unexpected error occurred", code="internal-error")
                )
                self._write_answer(status, headers, body, keep_alive=False)
            keep_alive = False
        if self._ctx.access_log is not None:
            self._log_access(self._ctx.access_log, head)
        self._finish(keep_alive)

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

    async def _exchange(self, head: RequestHead) -> bool:
        """Decide and forward one request; whether the connection may serve another."""
        ctx = self._ctx
        headers = head.headers

        def values(name: str) -> Sequence[str]:
            lower = name.lower()
            if lower == "authorization":
                return head.authorization
            if lower == "x-api-key":
                return head.api_keys
            return [v for k, v in headers if len(k) == len(lower) and k.lower() == lower]

        result = await decide(ctx.services, head.method, head.target, values, self._peer)
        if isinstance(result, Refusal):
            status, out, data = problem_parts(result.error, result.instance)
            return self._write_answer(status, out, data, keep_alive=True)
        forwarder = ctx.forwarder
        host = head.host
        # The Forwarder's pool, identity cache and trusted-proxy list are shared on purpose:
        # one set of upstream connections per worker, whichever server took the request.
        trusted = (
            bool(forwarder._trusted)
            and self._peer is not None
            and within_networks(self._peer, forwarder._trusted)
        )
        out_headers = request_headers(
            headers,
            Origin(self._peer, "http", host, trusted),
            forwarder._identity(result.principal, result.upstream),
        )
        target = result.target
        path = target.path + "?" + target.query if target.query else target.path
        body = self._body
        length = head.length if head.length >= 0 and not head.chunked else None
        try:
            response = await forwarder._client.request(
                result.upstream, head.method, path, out_headers, body, length
            )
        except UpstreamError as exc:
            log.warning("upstream %s: %s", result.upstream.name, exc)
            status, out, data = problem_parts(_upstream_error(exc), target.path)
            return self._write_answer(status, out, data, keep_alive=True)
        return await self._relay(head, response)

    async def _relay(self, head: RequestHead, response: Connection) -> bool:
        """Write the upstream's answer, keeping its framing; whether to keep the connection."""
        transport = self._transport
        assert transport is not None
        framing = response.framing
        keep_alive = framing != "close"
        extra: list[Field] = []
        if framing == "chunked":
            extra.append((b"Transfer-Encoding", b"chunked"))
        if not keep_alive or not head.keep_alive:
            extra.append((b"Connection", b"close"))
        out = relayed_head(
            response.status, response.raw_reason, response_fields(response.fields), extra
        )
        if response.complete:
            data = response.take_body()
            response.release()
            self._answered = (response.status, len(data))
            if framing == "chunked":
                end = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n"
                self._hold(out + end)
            else:
                self._hold(out + data if data else out)
            return keep_alive
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


def _upstream_error(exc: UpstreamError) -> GatewayError:
    """The same mapping as the aiohttp path (`forward._failure`)."""
    if isinstance(exc, UpstreamTimeout):
        return GatewayTimeout(str(exc))
    if isinstance(exc, ClientRequestError):
        return BadRequest(str(exc), code="bad-client-request")
    return BadGateway(str(exc))

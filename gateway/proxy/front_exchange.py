"""One client connection's answers on the fast front: decide each request, forward it through
the shared upstream client and write the answer, keeping the upstream's framing.

The driver (`front.FrontProtocol`) hands over each request head (and its body, if any) and is
told when the answer is complete (`Driver.answered`). The common request — no body, a key in
the in-process cache, an idle pooled upstream connection — is decided and sent at once and
answered from the upstream connection's callback (`_heard`), with no task, future or
coroutine for it; everything else runs in a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Final, Protocol

from gateway import metrics, tracing
from gateway.access import IDS, REQUEST_ID, Access, log_access
from gateway.errors import GatewayError, problem_parts, upstream_error
from gateway.logs import access_enabled
from gateway.proxy.decision import Allowed, Decision, Refused
from gateway.proxy.front_body import RequestBody
from gateway.proxy.front_context import FrontContext
from gateway.proxy.h1.heads import relayed_head, render_head
from gateway.proxy.h1.server import RequestHead
from gateway.proxy.handler import Pending, decide_now, finish
from gateway.proxy.headers import Field, Header, response_fields
from gateway.proxy.limiting import NeedsLimit
from gateway.proxy.outbox import outbox
from gateway.proxy.response import Response
from gateway.proxy.upstream_http import UpstreamError

log: Final = logging.getLogger("gateway.proxy")
# A C static in the compiled build: no module-dict lookup per call (four per request).
_clock: Final = time.perf_counter

CONTINUE_LINE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class Driver(Protocol):
    """What the exchange needs of the connection's driver."""

    def answered(self, keep_alive: bool) -> None: ...

    def may_keep_alive(self) -> bool: ...


class Exchanger:
    """Answers for one client connection, one request at a time (see the module docstring)."""

    def __init__(
        self, driver: Driver, transport: asyncio.Transport, peer: str | None, ctx: FrontContext
    ) -> None:
        self._driver = driver
        self._transport = transport
        self.peer = peer
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._outbox = outbox(self._loop)
        self._held: list[bytes] = []  # answers held until the loop's pass ends (outbox.py)
        self._head: RequestHead | None = None  # the request being answered
        self._body: RequestBody | None = None
        self._waiting: Allowed | None = None  # sent by `_answer_now`, heard by `_heard`
        self._extra: list[Field] = []  # fields the gateway adds to the answer (rate limits)
        self._task: asyncio.Task[None] | None = None
        self._streaming: Response | None = None  # a response being streamed (`cut` closes it)
        self._drain: asyncio.Future[None] | None = None
        self.write_paused = False
        self.lost = False
        self.answered = (0, 0)  # status and body bytes of the answer, for the access log
        self._trusted = ctx.forwarder.trusts(peer)  # a proxy whose X-Request-Id is believed
        # The request being answered, for metrics and the access log (see `_done`).
        self._started = 0.0
        self.request_id = ""
        self._decided: Allowed | Refused | None = None
        self._auth: float | None = None  # seconds to decide
        self._sent = 0.0  # when the request went upstream
        self._upstream: float | None = None  # seconds to the upstream's response head
        self._upstream_status: int | None = None
        self._outcome: str | None = None  # set when forwarding failed
        self._span: tracing.Span | None = None  # only while tracing is on

    # -- from the driver --------------------------------------------------------------------

    def serve(self, head: RequestHead, body: RequestBody | None) -> None:
        """Answer `head` (its body, if any, is fed to `body` by the driver)."""
        self._started = _clock()
        self._head, self._body = head, body
        self.answered = (0, 0)  # a request that gets no answer logs status 0
        self.request_id = IDS.take(head.values(REQUEST_ID), True) if self._trusted else IDS.new()
        self._decided = self._auth = self._upstream = self._upstream_status = None
        self._outcome = None
        if tracing.ENABLED:
            self._span = tracing.start(head.method, head.values, self.request_id)
        decided = None
        if body is None:
            try:
                decided = decide_now(
                    self._ctx.services, head.method, head.target, head.values, self.peer
                )
                if not isinstance(decided, Pending):
                    self._note(decided, lookup=False)
                    if self._answer_now(head, decided):
                        return
            except Exception:  # noqa: BLE001 - as in `_serve`
                self._crashed(head)
                return
        self._spawn(head, self._exchange(head, decided))

    def fail(self, error: GatewayError) -> None:
        """Answer a request that could not be read (or timed out), then close."""
        if self._head is None or self.answered[0] == 0:  # nothing written for a request
            status, headers, body = problem_parts(error)
            self._write_answer(status, headers, body, keep_alive=False, head_only=False)

    def flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held = []
        transport = self._transport
        if not self.lost and not transport.is_closing():
            transport.write(held[0] if len(held) == 1 else b"".join(held))

    def writing_resumed(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def connection_lost(self) -> None:
        self.lost = True
        self._held.clear()
        self.writing_resumed()

    # -- writing ----------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        """Write now, after anything held (the order on the connection never changes)."""
        if self._held:
            self.flush()
        self._transport.write(data)

    def _hold(self, data: bytes) -> None:
        """Write at the end of the loop's pass: for an answer with nothing behind it."""
        if not self._held:
            self._outbox.hold(self)
        self._held.append(data)

    async def _drained(self) -> None:
        while self.write_paused and not self.lost:
            self._drain = self._loop.create_future()
            await self._drain

    def _write_answer(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        keep_alive: bool,
        head_only: bool,
    ) -> bool:
        if self.lost or self._transport.is_closing():
            return False
        keep_alive = keep_alive and self._driver.may_keep_alive()
        pairs: list[Header] = [*headers.items(), ("Content-Length", str(len(body)))]
        if self.request_id:
            pairs.append((REQUEST_ID, self.request_id))
        if not keep_alive:
            pairs.append(("Connection", "close"))
        out = render_head(status, None, pairs)
        data = out if head_only else out + body
        self.answered = (status, 0 if head_only else len(body))
        if keep_alive:
            self._hold(data)
        else:
            self._send(data)
        return keep_alive

    # -- one request ------------------------------------------------------------------------

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
        if not self.lost:
            status, headers, body = problem_parts(
                GatewayError("an unexpected error occurred", code="internal-error")
            )
            self._write_answer(status, headers, body, keep_alive=False, head_only=False)
        self._done(head, False)

    def _note(self, decided: Allowed | Refused, *, lookup: bool) -> None:
        """The decision is made: time it (the auth step)."""
        self._decided = decided
        self._auth = _clock() - self._started
        metrics.auth_decided(self._auth, lookup=lookup)

    def _done(self, head: RequestHead, keep_alive: bool) -> None:
        """The request is answered (or abandoned): count and log it, then tell the driver."""
        total = _clock() - self._started
        decided = self._decided
        route, outcome = metrics.UNMATCHED, "internal-error"
        key_id: str | None = None
        user_id: str | None = None
        if isinstance(decided, Allowed):
            route, outcome = decided.route.path, self._outcome or "allowed"
            principal = decided.principal
            if principal is not None:
                key_id, user_id = principal.key_id, principal.authority.user_id
        elif decided is not None:
            route, outcome, key_id = decided.route or route, decided.outcome, decided.key_id
        status = self.answered[0]
        metrics.request_done(route, head.method, status, outcome, total)
        if self._span is not None:
            self._span.finish(route, status, outcome)
            self._span = None
        access = self._ctx.access_log
        # `disabled` first: an attribute read settles the usual case (access_log off)
        if access is not None and not access.disabled and access_enabled(access):
            self._log_access(
                access,
                head,
                Access(
                    self.request_id,
                    self.peer,
                    head.method,
                    head.target,
                    route,
                    status,
                    outcome,
                    key_id,
                    user_id,
                    self._upstream_status,
                    self.answered[1],
                    total,
                    self._upstream,
                    self._auth,
                ),
            )
        self._head = self._body = None
        self._decided = None
        self._driver.answered(keep_alive)

    @staticmethod
    def _log_access(logger: logging.Logger, head: RequestHead, access: Access) -> None:
        """The access line (gateway/access.py), with the Referer and User-Agent sent."""
        referer = agent = None
        for name, value in head.headers:
            if len(name) in (7, 10):
                lower = name.lower()
                if lower == "referer":
                    referer = value
                elif lower == "user-agent":
                    agent = value
        log_access(logger, access._replace(referer=referer, agent=agent))

    def _answer_now(self, head: RequestHead, decided: Allowed | Refused) -> bool:
        """Answer a refusal, or send an allowed request on an idle upstream connection; False
        when there is none (the request then takes a task, as one with a body does)."""
        if isinstance(decided, Refused):
            self._done(head, self._refuse(head, decided))
            return True
        path, headers = self._upstream_request(head, decided)
        self._waiting = decided  # before sending: the answer may come at once
        self._sent = _clock()
        try:
            sent = self._ctx.forwarder.client.send_now(
                decided.upstream, head.method, path, headers, self._heard
            )
        except UpstreamError as exc:
            self._waiting = None
            self._done(head, self._upstream_failed(head, exc, decided))
            return True
        if not sent:
            self._waiting = None
        return sent

    def _heard(self, answer: Response | UpstreamError) -> None:
        """The upstream's answer to a request sent by `_answer_now` (the client has already
        sent it again if the pooled connection turned out stale)."""
        head, decided = self._head, self._waiting
        assert head is not None
        assert decided is not None
        self._waiting = None
        self._heard_upstream(decided, answer)
        if isinstance(answer, UpstreamError):
            self._done(head, self._upstream_failed(head, answer, decided))
            return
        try:
            if answer.complete:
                self._done(head, self._relay_whole(head, answer))
            else:  # a body still to come: streamed by a task
                self._spawn(head, self._relay(head, answer, decided))
        except Exception:  # noqa: BLE001 - as in `_serve`
            answer.close()
            self._crashed(head)

    async def _exchange(self, head: RequestHead, decided: Decision | NeedsLimit | None) -> bool:
        """Decide (unless `decided` already; resuming it after a lookup) and forward one
        request; whether the connection may serve another."""
        services = self._ctx.services
        result = decided
        if result is None:
            result = decide_now(services, head.method, head.target, head.values, self.peer)
        if isinstance(result, Pending):
            result = await finish(services, result, head.values, self.peer)
            self._note(result, lookup=True)
        elif decided is None:
            self._note(result, lookup=False)
        body = self._body
        if isinstance(result, Refused):
            # A client that waits for `100 Continue` has not sent its body: it never will be
            # read. The connection closes after the answer (RFC 9110 §10.1.1 lets a client
            # send the body anyway; nothing of it may be taken for a next request).
            return self._refuse(head, result, keep_alive=head.expect is None or body is None)
        if head.expect is not None and body is not None and not body.ended:
            self._send(CONTINUE_LINE)  # allowed: now the upload is worth sending
        path, out_headers = self._upstream_request(head, result)
        length = head.length if head.length >= 0 and not head.chunked else None
        live = self._ctx.forwarder.live
        watched = None
        if body is not None and not body.ended and live is not None:
            # An upload still arriving: its key is followed while it is forwarded.
            watched = live.watch(
                head.method, head.target, head.values, result.principal, self.cut, self.peer
            )
        self._sent = _clock()
        try:
            response = await self._ctx.forwarder.client.request(
                result.upstream, head.method, path, out_headers, body, length
            )
        except UpstreamError as exc:
            self._heard_upstream(result, exc)
            return self._upstream_failed(head, exc, result)
        finally:
            if live is not None:
                live.unwatch(watched)
        self._heard_upstream(result, response)
        return await self._relay(head, response, result)

    def _heard_upstream(self, allowed: Allowed, answer: Response | UpstreamError) -> None:
        self._upstream = seconds = _clock() - self._sent
        metrics.upstream_answered(allowed.upstream.name, seconds)
        if isinstance(answer, UpstreamError):
            self._outcome = "upstream-failed"
        else:
            self._upstream_status = answer.status

    def _upstream_request(self, head: RequestHead, allowed: Allowed) -> tuple[str, list[Header]]:
        """The upstream request target and headers for an allowed request."""
        if allowed.headers:
            self._extra = [(n.encode(), v.encode()) for n, v in allowed.headers]
        elif self._extra:
            self._extra = []
        headers = self._ctx.forwarder.upstream_headers(
            head.headers, self.peer, "http", head.host, allowed.principal, allowed.upstream
        )
        headers.append((REQUEST_ID, self.request_id))
        if self._span is not None:
            headers.extend(self._span.headers())
        target = allowed.target
        return (target.path + "?" + target.query if target.query else target.path), headers

    def _refuse(self, head: RequestHead, refusal: Refused, *, keep_alive: bool = True) -> bool:
        status, out, data = problem_parts(refusal.error, refusal.instance)
        return self._write_answer(
            status, out, data, keep_alive=keep_alive, head_only=head.method == "HEAD"
        )

    def _upstream_failed(self, head: RequestHead, exc: UpstreamError, allowed: Allowed) -> bool:
        log.warning("upstream %s: %s", allowed.upstream.name, exc)
        status, out, data = problem_parts(upstream_error(exc), allowed.target.path)
        return self._write_answer(
            status, out, data, keep_alive=True, head_only=head.method == "HEAD"
        )

    def _response_head(self, head: RequestHead, response: Response) -> tuple[bytes, bool]:
        """The head to relay, and whether the connection may serve another request after."""
        framing = response.framing
        keep_alive = framing != "close" and self._driver.may_keep_alive()
        extra: list[Field] = [(b"X-Request-Id", self.request_id.encode("latin-1"))]
        if self._extra:
            extra.extend(self._extra)
        if framing == "chunked":
            extra.append((b"Transfer-Encoding", b"chunked"))
        if not keep_alive:
            extra.append((b"Connection", b"close"))
        out = relayed_head(
            response.status, response.raw_reason, response_fields(response.fields), extra
        )
        return out, keep_alive

    def _relay_whole(self, head: RequestHead, response: Response) -> bool:
        """Relay an answer that arrived whole (the usual small one) in one write."""
        out, keep_alive = self._response_head(head, response)
        data = response.take_body()
        response.release()
        self.answered = (response.status, len(data))
        if response.framing == "chunked":
            end = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n"
            self._hold(out + end)
        else:
            self._hold(out + data if data else out)
        return keep_alive

    def cut(self) -> None:
        """The key no longer allows the exchange in flight: cut the client's connection (a
        body being read fails, a head already out leaves a visibly truncated answer) and the
        upstream's with it."""
        self._transport.abort()
        if self._streaming is not None:
            self._streaming.close()

    async def _relay(self, head: RequestHead, response: Response, allowed: Allowed) -> bool:
        """Write the upstream's answer, keeping its framing; whether to keep the connection."""
        if response.complete:
            return self._relay_whole(head, response)
        live = self._ctx.forwarder.live
        watched = None
        if live is not None:  # a streamed answer: it follows its key while it runs
            self._streaming = response
            watched = live.watch(
                head.method, head.target, head.values, allowed.principal, self.cut, self.peer
            )
        try:
            return await self._stream(head, response)
        finally:
            self._streaming = None
            if live is not None:
                live.unwatch(watched)

    async def _stream(self, head: RequestHead, response: Response) -> bool:
        transport = self._transport
        out, keep_alive = self._response_head(head, response)
        framing = response.framing
        self._send(out)
        sent = 0
        self.answered = (response.status, 0)
        try:
            while chunk := await response.read():
                sent += len(chunk)
                self.answered = (response.status, sent)
                if self.lost:
                    response.close()
                    return False
                if framing == "chunked":
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)  # after `_send(out)`: nothing is held here
                if self.write_paused:
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

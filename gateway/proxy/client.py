"""A lean HTTP/1.1 client for upstreams: one keep-alive pool per upstream, on asyncio protocols.

Why not `aiohttp.ClientSession`: on the benchmark's hot path its per-request machinery (URL
objects, cookie jar, tracing hooks, a stream reader per body) costs about as much as the whole
authorization decision. A proxy needs much less: write one request head, relay body bytes,
parse one response head, keep the connection. So this package does exactly that, and
deliberately has no cookie jar, never follows redirects, never decompresses and never
re-normalises the request target it is given. The protocol: `h1.client` (sans-IO); one
connection: `connection` (its request side: `upstream_request`); the answer: `response`; the
pools, the client and the one rule for sending a request again: here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final
from urllib.parse import urlsplit

from gateway.policy.model import Upstream
from gateway.proxy.connection import Connection, Listener
from gateway.proxy.headers import Header
from gateway.proxy.response import Response
from gateway.proxy.upstream_http import (
    UpstreamClosed,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.proxy.upstream_request import BodySource

log: Final = logging.getLogger("gateway.proxy")

IDLE_SECONDS: Final = 30.0  # pooled connections older than this are closed rather than reused
SWEEP_SECONDS: Final = 0.25  # read deadlines are checked this often, so fire up to this much late
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def worth_resending(error: UpstreamError, method: str, has_body: bool, reused: bool) -> bool:
    """The stale-connection rule, the only place it is decided: a pooled connection the
    upstream closed while it sat idle fails before any byte of an answer. Such a request is
    sent once more, on a new connection, when repeating it is harmless: an idempotent method
    and no body (a body may be half consumed already)."""
    return (
        reused
        and not has_body
        and method in IDEMPOTENT
        and isinstance(error, UpstreamClosed)
        and error.before_response
    )


# -- the pool ----------------------------------------------------------------------------------

Opener = Callable[["Pool"], Awaitable[Connection]]


class Pool:
    """Keep-alive connections to one upstream, at most `upstream.pool_size` open at once.

    Fair under load: requests that find no connection wait in one queue, and whatever frees
    up (a connection done with its exchange, or the slot of one that closed) is handed to the
    oldest waiter directly, so a woken waiter never has to compete for it again. While anyone
    waits, no newcomer takes an idle connection or opens a new one: the task-free fast path
    (`take_idle`) cannot overtake the queue, and the wait's deadline counts from arrival.
    """

    def __init__(
        self,
        upstream: Upstream,
        loop: asyncio.AbstractEventLoop,
        tls: ssl.SSLContext | None,
        opener: Opener | None = None,
    ) -> None:
        parts = urlsplit(upstream.url)
        self._opener = opener  # how a connection is opened, if not by a socket (tests)
        self.upstream = upstream
        self.loop = loop
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_header = parts.netloc
        self.tls = tls if parts.scheme == "https" else None
        self.size = upstream.pool_size
        self.connect_timeout = upstream.connect_timeout
        self.read_timeout = upstream.read_timeout
        self._idle: list[Connection] = []
        self._open = 0  # connections open or being opened, and slots handed to a waiter
        # Each waiter is answered with a connection to reuse, or None: a slot to open one in.
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._closed = False
        self._watched: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._resending: set[asyncio.Task[None]] = set()  # held: the loop holds tasks weakly

    @property
    def open(self) -> int:
        return self._open

    @property
    def idle(self) -> int:
        return len(self._idle)

    # read deadlines: one periodic sweep per pool instead of one timer per wait

    def watch(self, conn: Connection) -> None:
        self._watched.add(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def unwatch(self, conn: Connection) -> None:
        self._watched.discard(conn)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self._watched):
            conn.check_deadline(now)
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep) if self._watched else None

    @property
    def waiting(self) -> int:
        """How many requests wait for a connection."""
        return len(self._waiters)

    def take_idle(self) -> Connection | None:
        """A pooled connection fit for reuse, if any and if nobody waits for one (the hot
        path: no coroutine needed)."""
        if self._idle and not self._waiters:
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()
                if conn.reusable and now - conn.idle_since < IDLE_SECONDS:
                    return conn
                self._forget(conn)
        return None

    async def acquire(self, *, fresh: bool = False) -> tuple[Connection, bool]:
        """A connection and whether it was reused from the pool (never, if `fresh`)."""
        if not self._waiters:
            conn = None if fresh else self.take_idle()
            if conn is not None:
                return conn, True
            if self._open < self.size:
                self._open += 1
                return await self._connect(), False
            if fresh and self._idle:  # a new connection in the slot of an idle one
                self._retire(self._idle.pop())
                return await self._connect(), False
        conn = await self._wait(self.loop.time() + self.connect_timeout)
        if conn is None:
            return await self._connect(), False
        if fresh:
            self._retire(conn)
            return await self._connect(), False
        return conn, True

    async def _wait(self, deadline: float) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._pass_on(waiter.result())  # handed over just now, and not used
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("no upstream connection became free in time") from None
            raise

    def _pass_on(self, conn: Connection | None) -> None:
        if conn is None:
            self._free_slot()
        else:
            self.release(conn)

    def _hand_over(self, conn: Connection | None) -> bool:
        """Give `conn` (or a slot, for None) to the oldest waiter, if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _free_slot(self) -> None:
        if not self._hand_over(None):  # else the slot stays counted: the waiter opens one
            self._open -= 1

    def _retire(self, conn: Connection) -> None:
        """Close `conn` but keep its slot for the caller's new connection."""
        conn.shutdown()
        conn.counted = False

    async def _connect(self) -> Connection:
        """Open a connection in a slot already counted in `_open`."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._opener is not None:
                    return await self._opener(self)
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self, self.loop, self.host_header, self.read_timeout),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            self._free_slot()
            raise UpstreamTimeout("the upstream did not accept a connection in time") from None
        except OSError:
            self._free_slot()
            raise UpstreamUnreachable("the upstream could not be reached") from None
        except BaseException:
            self._free_slot()
            raise
        return conn

    def release(self, conn: Connection) -> None:
        if not conn.counted:
            return  # released before; releasing twice must not free a second slot
        if conn.reusable and not self._closed:
            conn.to_idle()
            if not self._hand_over(conn):
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
        else:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        conn.shutdown()
        if conn.counted:
            conn.counted = False
            self._free_slot()

    def lost(self, conn: Connection) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
            self._forget(conn)

    def failed(self, conn: Connection, error: UpstreamError, listener: Listener) -> None:
        self._forget(conn)
        if not worth_resending(error, conn.method, False, True):  # listened: idle, no body
            listener(error)
            return
        task = self.loop.create_task(self._resend(conn.method, conn.target, conn.headers, listener))
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)

    async def _resend(
        self, method: str, target: str, headers: Sequence[Header], listener: Listener
    ) -> None:
        answer: Response | UpstreamError
        try:
            answer = await exchange(self, method, target, headers, None, None, fresh=True)
        except UpstreamError as exc:
            answer = exc
        except Exception:
            log.exception("sending a request again failed unexpectedly")
            answer = UpstreamClosed("the upstream exchange failed")
        listener(answer)

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            self._forget(self._idle.pop())
        for task in self._resending:
            task.cancel()


# -- the client --------------------------------------------------------------------------------


class UpstreamClient:
    """One per application: a pool per upstream, created on first use."""

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}  # by upstream name: a str hash is cached
        self._tls: ssl.SSLContext | None = None

    def pool_use(self) -> list[tuple[str, int, int]]:
        """(upstream name, busy connections, idle connections) per pool, for metrics."""
        return [(name, pool.open - pool.idle, pool.idle) for name, pool in self._pools.items()]

    def _pool(self, upstream: Upstream) -> Pool:
        pool = self._pools.get(upstream.name)
        if pool is None or pool.upstream is not upstream:
            if upstream.url.startswith("https:") and self._tls is None:
                self._tls = ssl.create_default_context()
            if pool is not None:
                pool.close()  # another Upstream under this name: the policy was replaced
            pool = Pool(upstream, asyncio.get_running_loop(), self._tls)
            self._pools[upstream.name] = pool
        return pool

    async def request(
        self,
        upstream: Upstream,
        method: str,
        target: str,
        headers: Sequence[Header],
        body: BodySource | None = None,
        length: int | None = None,
    ) -> Response:
        """Send a request and wait for the response head.

        `target` is sent verbatim. With a `body`, `length` is its Content-Length, or None to
        send it chunked. Raises UpstreamError; on success the caller owns the response and
        must `release()` or `close()` it.
        """
        return await exchange(self._pool(upstream), method, target, headers, body, length)

    def send_now(
        self,
        upstream: Upstream,
        method: str,
        target: str,
        headers: Sequence[Header],
        listener: Listener,
    ) -> bool:
        """Send a request without a body on an idle pooled connection, without waiting:
        `listener` is called once, with the response head or the error. False (and nothing
        sent) when no connection is idle: `request` waits for one. The stale-connection rule
        applies as in `request`."""
        pool = self._pool(upstream)
        conn = pool.take_idle()
        if conn is None:
            return False
        try:
            conn.start(method, target, headers, hold=True)
        except UpstreamError:
            conn.release()
            raise
        conn.listen(listener)
        return True

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


async def exchange(
    pool: Pool,
    method: str,
    target: str,
    headers: Sequence[Header],
    body: BodySource | None,
    length: int | None,
    *,
    fresh: bool = False,
) -> Response:
    """One request and its response head, on a pooled connection (a new one if `fresh`)."""
    conn = None if fresh else pool.take_idle()
    reused = conn is not None
    if conn is None:
        conn, reused = await pool.acquire(fresh=fresh)
    while True:
        try:
            conn.start(
                method,
                target,
                headers,
                length=length,
                chunked=body is not None and length is None,
                hold=body is None,
            )
            if body is not None:
                conn.send_body(body)
            return await conn.response()
        except UpstreamError as exc:
            conn.close()
            if not worth_resending(exc, method, body is not None, reused):
                raise
            conn, reused = await pool.acquire(fresh=True)
        except BaseException:
            conn.close()
            raise

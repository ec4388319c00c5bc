"""Real upstream servers for integration tests, on free ports of 127.0.0.1.

`EchoUpstream`: an aiohttp server that records every request it receives (method, raw target,
headers with duplicates and original spelling, body size) and answers with the record as JSON.
Add routes of your own with `upstream.route(method, path, handler)` before `start()`.

`RawUpstream`: a plain asyncio TCP server that hands each connection to your coroutine, for
answers no well-behaved server would send (bad framing, a stall mid-body, an early close).

Both are async context managers::

    async with EchoUpstream() as upstream:
        ...  # upstream.url == "http://127.0.0.1:<port>", upstream.received[-1].headers
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """One request as the upstream saw it."""

    method: str
    target: str  # the raw request-target, exactly as sent on the wire
    headers: list[tuple[str, str]]
    body_size: int
    peer: str | None = None
    peer_port: int | None = None  # tells the gateway's upstream connections apart

    def header(self, name: str) -> list[str]:
        """Every value of a header (case-insensitive, original spellings kept apart)."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self) -> list[str]:
        return [k for k, _ in self.headers]


def _raw_headers(request: web.Request) -> list[tuple[str, str]]:
    return [
        (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
        for k, v in request.raw_headers
    ]


def _peer_port(request: web.Request) -> int | None:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    return int(peername[1]) if peername else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class EchoUpstream:
    """An aiohttp upstream recording what it receives; the catch-all route echoes it back."""

    received: list[Received] = field(default_factory=list)
    _routes: list[tuple[str, str, Handler]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Serve `handler` at `path` (aiohttp syntax); the request is recorded first."""
        self._routes.append((method, path, handler))

    async def _record(self, request: web.Request) -> Received:
        size = 0
        async for chunk in request.content.iter_any():  # streamed: uploads may be huge
            size += len(chunk)
        entry = Received(
            method=request.method,
            target=request.raw_path,
            headers=_raw_headers(request),
            body_size=size,
            peer=request.remote,
            peer_port=_peer_port(request),
        )
        self.received.append(entry)
        return entry

    async def _echo(self, request: web.Request) -> web.Response:
        entry = await self._record(request)
        return web.json_response(
            {
                "method": entry.method,
                "target": entry.target,
                "headers": entry.headers,
                "body_size": entry.body_size,
            }
        )

    def _wrap(self, handler: Handler) -> Handler:
        async def recorded(request: web.Request) -> web.StreamResponse:
            if request.method not in ("GET", "HEAD") or not request.headers.get("Upgrade"):
                await self._record(request)
            else:
                self.received.append(
                    Received(
                        request.method,
                        request.raw_path,
                        _raw_headers(request),
                        0,
                        request.remote,
                        _peer_port(request),
                    )
                )
            return await handler(request)

        return recorded

    async def start(self) -> Self:
        app = web.Application()
        for method, path, handler in self._routes:
            app.router.add_route(method, path, self._wrap(handler))
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


Conversation = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawUpstream:
    """A TCP server that runs `conversation(reader, writer)` for each connection."""

    def __init__(self, conversation: Conversation) -> None:
        self._conversation = conversation
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._conversation(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the peer went away, or the server is shutting down: both end the talk
        finally:
            self._tasks.discard(task)
            writer.close()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    """Read one request head (through the blank line) from a raw connection."""
    return await reader.readuntil(b"\r\n\r\n")


async def generated(total: int, chunk: bytes) -> AsyncIterator[bytes]:
    """`total` bytes made on the fly from `chunk`, so nothing large sits in memory."""
    sent = 0
    while sent < total:
        piece = chunk if total - sent >= len(chunk) else chunk[: total - sent]
        sent += len(piece)
        yield piece


def download_upstream(total: int, chunk: bytes) -> EchoUpstream:
    """An upstream whose GET /api/download streams `total` generated bytes, framed by
    Content-Length, or chunked with `?framing=chunked`."""
    upstream = EchoUpstream()

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.query.get("framing") == "chunked":
            response.enable_chunked_encoding()
        else:
            response.content_length = total
        await response.prepare(request)
        async for piece in generated(total, chunk):
            await response.write(piece)
        await response.write_eof()
        return response

    upstream.route("GET", "/api/download", download)
    return upstream

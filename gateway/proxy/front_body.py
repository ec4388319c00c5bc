"""A request body on its way from the fast front's client socket to the upstream client.

The front feeds it the bytes it receives (length- or chunk-framed); the upstream client reads
it through `readany`, the same interface as aiohttp's request stream. Reading from the client
pauses while more than HIGH_WATER bytes wait, so a fast client cannot fill the memory.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

from gateway.proxy.front_http import BadRequestHead, ChunkedDecoder

HIGH_WATER = 256 * 1024  # buffered request bytes before the client socket stops being read
LOW_WATER = 64 * 1024


class FlowControl(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


class RequestBody:
    """A request body as the upstream client reads it (`readany`), fed by the protocol."""

    def __init__(self, proto: FlowControl, length: int, chunked: bool) -> None:
        self._proto = proto
        self._remaining = length
        self._decoder = ChunkedDecoder() if chunked else None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        self.done = not chunked and length == 0
        self.discarding = False  # answered without it: the rest is read and dropped

    def feed(self, data: bytes) -> bytes:
        """Take this body's bytes from `data`; return what follows the body."""
        rest = b""
        if self._decoder is not None:
            pieces: list[bytes] = []
            try:
                rest = self._decoder.feed(data, pieces)
            except BadRequestHead as exc:
                self.fail(exc)
                return b""
            for piece in pieces:
                self._add(piece)
            self.done = self._decoder.done
        else:
            if len(data) > self._remaining:
                data, rest = data[: self._remaining], data[self._remaining :]
            self._remaining -= len(data)
            self._add(data)
            self.done = self._remaining == 0
        self._wake()
        return rest

    def ended(self) -> bool:
        """Complete or failed: no more bytes belong to it."""
        return self.done or self.error is not None

    def discard(self) -> None:
        self.discarding = True
        self._chunks.clear()
        self._buffered = 0
        self._proto.resume()

    def _add(self, piece: bytes) -> None:
        if piece and not self.discarding:
            self._chunks.append(piece)
            self._buffered += len(piece)
            if self._buffered > HIGH_WATER:
                self._proto.pause()

    def fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def readany(self) -> bytes:
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < LOW_WATER:
            self._proto.resume()
        return chunk

"""A request body on its way from the fast front's client socket to the upstream client.

The front hands it the pieces its HTTP/1.1 state machine decodes (`add`, then `end`); the
upstream client reads it through `readany`, the same interface as aiohttp's request stream.
Reading from the client pauses while more than HIGH_WATER bytes wait, so a fast client
cannot fill the memory.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Final, Protocol

HIGH_WATER: Final = 256 * 1024  # buffered request bytes before the client socket stops being read
LOW_WATER: Final = 64 * 1024


class FlowControl(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


class RequestBody:
    """A request body as the upstream client reads it (`readany`), fed by the protocol."""

    __slots__ = ("_buffered", "_chunks", "_proto", "_waiter", "done", "error")

    def __init__(self, proto: FlowControl) -> None:
        self._proto = proto
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        self.done = False

    @property
    def full(self) -> bool:
        """Enough waits to be sent: read no more from the client for now."""
        return self._buffered > HIGH_WATER

    @property
    def ended(self) -> bool:
        """Complete or failed: no more bytes belong to it."""
        return self.done or self.error is not None

    def add(self, piece: bytes) -> None:
        self._chunks.append(piece)
        self._buffered += len(piece)
        if self._buffered > HIGH_WATER:
            self._proto.pause()
        self._wake()

    def end(self) -> None:
        self.done = True
        self._wake()

    def fail(self, exc: Exception) -> None:
        if self.error is None and not self.done:
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

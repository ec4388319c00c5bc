"""An upstream's response, apart from the connection it came on: the head, and the body as it
arrives. The connection pushes body pieces in; the reader takes them out; the response decides
when the connection should stop reading (flow control) and tells it through `Stream`."""

from __future__ import annotations

from typing import Final, Protocol

from gateway.proxy.h1.client import Framing, Head
from gateway.proxy.headers import Field, Header
from gateway.proxy.upstream_http import UpstreamError, decode_fields, text

# Flow control on the way back: stop reading the upstream socket while this much body waits
# for a slow client, resume below the low mark. Memory per exchange is bounded by these.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024


class Stream(Protocol):
    """What a response needs of its connection."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def more(self) -> None:
        """Wait (under the read timeout) until the response has news: data, end or error."""

    def release(self) -> None: ...

    def close(self) -> None: ...


class Response:
    """The head (`status`, `reason`, `fields`, `framing`) and the body: `take_body()` once
    `complete`, or `read()` until b"". Then `release()` (or `close()` on any failure)."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_paused",
        "_settled",
        "_stream",
        "complete",
        "error",
        "fields",
        "framing",
        "raw_reason",
        "status",
    )

    def __init__(self, stream: Stream, head: Head) -> None:
        self._stream = stream
        self.status = head.status
        self.raw_reason = head.reason
        self.fields: list[Field] = head.fields
        self.framing: Framing = head.framing
        self.complete = False  # the whole body has arrived (it may still sit in the buffer)
        self.error: UpstreamError | None = None  # why the body will not complete
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._settled = False  # released or closed: a second call must not touch the connection

    @property
    def reason(self) -> str:
        return text(self.raw_reason)

    @property
    def headers(self) -> list[Header]:
        """The header fields, decoded (the fast front relays `fields` raw)."""
        return decode_fields(self.fields)

    # fed by the connection ----------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._stream.pause_reading()

    def fail(self, error: UpstreamError) -> None:
        if not self.complete and self.error is None:
            self.error = error

    # read by the user ---------------------------------------------------------------------------

    def take_body(self) -> bytes:
        """The buffered body (all of it, once `complete`)."""
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._drained(0)
        return body

    async def read(self) -> bytes:
        """The next body piece, b"" at the end; raises UpstreamError (timeout, close)."""
        while True:
            if self._chunks:
                chunk = self._chunks.pop(0)
                self._drained(self._buffered - len(chunk))
                return chunk
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._stream.more()

    def _drained(self, buffered: int) -> None:
        self._buffered = buffered
        if self._paused and buffered < LOW_WATER:
            self._paused = False
            self._stream.resume_reading()

    @property
    def consumed(self) -> bool:
        """Complete and read to the end: the connection may serve another exchange."""
        return self.complete and not self._chunks

    def release(self) -> None:
        """The exchange is over: the connection goes back to its pool if clean, else closes."""
        if not self._settled:
            self._settled = True
            self._stream.release()

    def close(self) -> None:
        if not self._settled:
            self._settled = True
            self._stream.close()

"""Handing a client connection over to the internal aiohttp listener, byte for byte.

The fast front (`front.py`) serves only plain data-plane requests; for the gateway's own
surfaces, WebSocket upgrades, `Expect` and anything else unusual it replays the bytes received
so far to the full aiohttp application on an internal listener and then splices both directions
until either side closes. aiohttp sees the front as its peer, so the front records which
internal connection (by its local port) carries which client; `peer_middleware` in
`front_server.py` restores the real client address from that table.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

log = logging.getLogger("gateway.proxy")


class _Internal(asyncio.Protocol):
    """The front's connection to the internal listener, relaying answers to the client."""

    def __init__(self, splice: Splice) -> None:
        self._splice = splice

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._splice.internal = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._splice.client.write(data)

    def eof_received(self) -> bool:
        return False  # aiohttp closed its side: close ours, which closes the client's

    def connection_lost(self, exc: Exception | None) -> None:
        self._splice.internal_lost()

    def pause_writing(self) -> None:
        self._splice.client.pause_reading()

    def resume_writing(self) -> None:
        self._splice.client.resume_reading()


class Splice:
    """One handed-over client connection."""

    def __init__(
        self,
        client: asyncio.Transport,
        peer: str | None,
        address: tuple[str, int],
        peers: dict[int, str],
    ) -> None:
        self.client = client
        self.internal: asyncio.Transport | None = None
        self._peer = peer
        self._address = address
        self._peers = peers
        self._port: int | None = None
        self._pending: list[bytes] = []
        self._client_eof = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def start(self, initial: bytes) -> None:
        self._pending.append(initial)
        self._task = asyncio.get_running_loop().create_task(self._connect())  # kept referenced

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(lambda: _Internal(self), *self._address)
        except OSError as exc:
            log.warning("hand-over to the internal listener failed: %s", exc)
            self.client.close()
            return
        if self._closed:
            transport.close()
            return
        self._port = transport.get_extra_info("sockname")[1]
        if self._peer is not None:
            self._peers[self._port] = self._peer
        transport.writelines(self._pending)
        self._pending.clear()
        if self._client_eof and transport.can_write_eof():
            transport.write_eof()

    # called by the front protocol for the client side

    def from_client(self, data: bytes) -> None:
        if self.internal is None or self._port is None:
            self._pending.append(data)
        else:
            self.internal.write(data)

    def client_eof(self) -> None:
        self._client_eof = True
        if self.internal is not None and self._port is not None and self.internal.can_write_eof():
            self.internal.write_eof()

    def client_lost(self) -> None:
        self._closed = True
        if self.internal is not None:
            self.internal.close()

    def pause_writing(self) -> None:
        if self.internal is not None:
            self.internal.pause_reading()

    def resume_writing(self) -> None:
        if self.internal is not None:
            self.internal.resume_reading()

    def internal_lost(self) -> None:
        if self._port is not None:
            self._peers.pop(self._port, None)
        self.client.close()

"""A fixed-answer HTTP/1.1 server on asyncio: the upstream when nginx is not installed.

`python -m bench.fixed PORT`. It answers every request head with the same small body and keeps
the connection; it does not read request bodies (the benchmark sends none).
"""

from __future__ import annotations

import asyncio
import sys

from bench.servers import BODY

_BODY = BODY.encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(_BODY)}\r\n\r\n".encode()
    + _BODY
)


class Fixed(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * count)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Fixed, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

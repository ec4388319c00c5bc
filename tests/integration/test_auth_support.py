"""Helpers shared by the auth, cache and multi-instance tests; this module has no tests.

(It is named `test_auth_*` only because that is the file pattern these tests own; it can move
to a conftest once one exists. Upstreams come from `tests/integration/upstream.py`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

from gateway.keys import format as keyformat
from gateway.keys.manage import NewKey
from gateway.services import Services
from gateway.store.base import User

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = ROOT / "policies" / "example.yaml"
EXAMPLE_UPSTREAM = "http://127.0.0.1:8081"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def policy_for(folder: Path, upstream_url: str) -> Path:
    """The example policy with its demo upstream pointed at `upstream_url`."""
    text = EXAMPLE_POLICY.read_text(encoding="utf-8")
    assert EXAMPLE_UPSTREAM in text
    path = folder / "policy.yaml"
    path.write_text(text.replace(EXAMPLE_UPSTREAM, upstream_url), encoding="utf-8")
    return path


async def new_user(
    services: Services,
    email: str,
    grants: Sequence[str] = (),
    *,
    admin: bool = False,
    password: str | None = PASSWORD,
) -> User:
    return await services.users.create(
        email=email,
        password=password,
        actor="test",
        is_admin=admin,
        is_service=password is None,
        grants=grants,
    )


async def new_key(
    services: Services,
    owner: User,
    permissions: Sequence[str],
    *,
    path: str | None = None,
    expires_at: datetime | None = None,
) -> NewKey:
    return await services.keys.create(
        owner=owner,
        creator=None,
        label="test",
        permissions=permissions,
        path_rule=path,
        expires_at=expires_at,
    )


def unknown_key(prefix: str = "apk") -> str:
    """A well-formed key (valid checksum) that no store holds."""
    return keyformat.generate(prefix).text


def same_id_other_secret(key_text: str) -> str:
    """A well-formed key with `key_text`'s public id and a different secret."""
    key_id = keyformat.parse(key_text).key_id
    secret = "".join(secrets.choice(keyformat.ALPHABET) for _ in range(keyformat.SECRET_LEN))
    head = key_id + secret
    return head + keyformat.checksum(head)


def bad_checksum(key_text: str) -> str:
    """`key_text` with its last checksum character changed."""
    last = key_text[-1]
    return key_text[:-1] + ("0" if last != "0" else "1")


async def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` as is to 127.0.0.1:`port`; the response's status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


class TcpProxy:
    """A TCP forwarder in front of a real server, to take that server "down" and back.

    `stop()` closes the port and resets every open connection (what clients see when the
    server dies); `start()` listens again on the same port. `hold()` keeps the server's
    answers back until `release()`: the request has reached the server, its answer not yet
    the client (a slow database, frozen at the worst moment).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.answer_held = asyncio.Event()  # set once an answer waits behind hold()

    def url(self, template: str) -> str:
        """`template` (a URL to the target) rewritten to go through the proxy."""
        host, port = self.target
        return template.replace(f"{host}:{port}", f"127.0.0.1:{self.port}", 1)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hold(self) -> None:
        self.answer_held.clear()
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        up = asyncio.create_task(self._pump(client_r, server_w, gated=False))
        down = asyncio.create_task(self._pump(server_r, client_w, gated=True))
        self._tasks.update((up, down))
        up.add_done_callback(self._tasks.discard)
        down.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if gated and not self._flowing.is_set():
                    self.answer_held.set()
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


async def wait_until(check: Callable[[], Awaitable[bool]], *, seconds: float = 10.0) -> bool:
    """Poll `check` until it holds or `seconds` pass (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)

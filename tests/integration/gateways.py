"""The gateway under test, on either of its two HTTP servers, behind the same test policy.

`aiohttp`: the application on aiohttp's web server in this process (pytest-aiohttp), as the
data plane runs with `fast_data_plane: false`. `front`: a real `gateway serve` subprocess with
the fast front (`GATEWAY_FAST_DATA_PLANE=true`) on a SQLite database prepared (user and key)
before the process starts. Both answer on a real port of 127.0.0.1 and hand the test the same
`Gateway`: an HTTP client, the upstream, a key (`t.read` unless `permissions` says otherwise)
and a raw-socket helper.

The `make_gateway` fixture (tests/integration/conftest.py) gives every test that uses it once
per server; `@pytest.mark.server(name, reason=...)` restricts a test to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.server_limits import ClientLimits, LimitedRunner
from gateway.services import Services, open_services
from gateway.settings import load_settings
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.integration.serving import children, cmdline
from tests.integration.upstream import EchoUpstream, RawUpstream, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ("aiohttp", "front")

POLICY = """
permissions:
  - {{name: t.read, title: Read}}
  - {{name: t.admin, title: Administer}}
upstreams:
  main: {{url: "{main}", connect_timeout: 2, read_timeout: 2}}
  raw: {{url: "{raw}", connect_timeout: 2, read_timeout: 1}}
  dead: {{url: "http://127.0.0.1:{dead}", connect_timeout: 1, read_timeout: 1}}
  tiny: {{url: "{raw}", connect_timeout: 0.5, read_timeout: 3, pool_size: 1}}
  unaccepting: {{url: "http://127.0.0.1:{unaccepting}", connect_timeout: 0.5, read_timeout: 1}}
  few: {{url: "{main}", connect_timeout: 10, read_timeout: 10, pool_size: 2}}
routes:
  - {{path: /public/**, upstream: main, auth: none}}
  - {{path: /api/**, upstream: main, permission: t.read}}
  - {{path: /admin/**, upstream: main, permission: t.admin}}
  - {{path: /ws/**, methods: [GET], upstream: main, permission: t.read, websocket: true}}
  - {{path: /nows/**, methods: [GET], upstream: main, permission: t.read}}
  - {{path: /raw/**, upstream: raw, permission: t.read}}
  - {{path: /dead/**, upstream: dead, permission: t.read}}
  - {{path: /tiny/**, upstream: tiny, permission: t.read}}
  - {{path: /unaccepting/**, upstream: unaccepting, permission: t.read}}
  - {{path: /few/**, upstream: few, permission: t.read}}
  - {{path: /limited/**, upstream: main, permission: t.read, limits: [tight]}}
  - {{path: /limited-admin/**, upstream: main, permission: t.admin, limits: [tight]}}
  - {{path: /costly/**, upstream: main, permission: t.read, limits: [tight], cost: 2}}
  - {{path: /free/**, upstream: main, permission: t.read, limits: [tight], cost: 0}}
  - {{path: /pooled/**, upstream: main, permission: t.read, limits: [pool, tight]}}
  - {{path: /open/**, upstream: main, auth: none, limits: [anon]}}
limits:
  tight: 3/m
  pool: 4/m per owner
  anon: 2/m per address
"""


def write_policy(
    folder: Path, upstream: EchoUpstream, raw: RawUpstream | None, unaccepting: int | None
) -> Path:
    """The test policy in front of these upstreams (free ports stand in for absent ones)."""
    policy = folder / "policy.yaml"
    policy.write_text(
        POLICY.format(
            main=upstream.url,
            raw=raw.url if raw is not None else f"http://127.0.0.1:{free_port()}",
            dead=free_port(),
            unaccepting=unaccepting or free_port(),
        )
    )
    return policy


class Client:
    """The subset of pytest-aiohttp's TestClient the forwarding tests use, on a real port."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self._session = session
        self.port = port

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._session.get(self._url(path), **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._session.post(self._url(path), **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._session.request(method, self._url(path), **kwargs)

    def ws_connect(self, path: str, **kwargs: Any) -> Any:
        return self._session.ws_connect(self._url(path), **kwargs)


@dataclass
class Gateway:
    """The running gateway (`server` names which), its upstream, and a user holding a `t.read`
    key. `process` is the `gateway serve` subprocess on the front, None on aiohttp."""

    server: str
    client: TestClient[Any, Any] | Client
    upstream: EchoUpstream
    key: str
    key_id: str
    user_id: str
    port: int
    process: asyncio.subprocess.Process | None = None
    env: dict[str, str] | None = None  # the front process's GATEWAY_* environment

    @property
    def auth(self) -> dict[str, str]:
        return {"X-API-KEY": self.key}

    @property
    def pid(self) -> int:
        """The worker process serving the front (the master only supervises it)."""
        assert self.process is not None, "only the front runs in a process of its own"
        workers = [pid for pid in children(self.process.pid) if "spawn_main" in cmdline(pid)]
        assert len(workers) == 1, workers
        return workers[0]

    async def raw(self, data: bytes, *, seconds: float = 10) -> bytes:
        """Send raw bytes on one connection; read until the gateway closes it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(seconds):
                return await reader.read()
        finally:
            writer.close()


MakeGateway = Callable[..., Awaitable[Gateway]]
AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


async def _create_reader(services: Services, permissions: list[str]) -> tuple[str, str, str]:
    """A service user granted `permissions` and a key holding them: (key, key id, user id)."""
    user = await services.users.create(
        email="reader@example.com",
        password=None,
        actor="test",
        is_service=True,
        grants=permissions,
    )
    new = await services.keys.create(
        owner=user, creator=None, label="reader", permissions=permissions
    )
    return new.text, new.record.id, user.id


class LimitedTestServer(TestServer):
    """aiohttp's test server on the runner `gateway serve` uses (server_limits.py)."""

    def __init__(self, app: web.Application, limits: ClientLimits) -> None:
        super().__init__(app)
        self._limits = limits

    async def _make_runner(self, **kwargs: Any) -> LimitedRunner:
        return LimitedRunner(self.app, self._limits, **kwargs)


@contextlib.asynccontextmanager
async def aiohttp_gateways(
    aiohttp_client: AiohttpClient, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[MakeGateway]:
    """`make(upstream, raw, unaccepting, permissions, **settings)` on aiohttp's server in
    this process; settings are `Settings` fields."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            upstream: EchoUpstream | None = None,
            raw: RawUpstream | None = None,
            unaccepting: int | None = None,
            permissions: tuple[str, ...] = ("t.read",),
            **settings: Any,
        ) -> Gateway:
            upstream = await stack.enter_async_context(upstream or EchoUpstream())
            policy = write_policy(tmp_path, upstream, raw, unaccepting)
            config = make_settings(sqlite_url, policy=(policy,), **settings)
            app = create_app(config)
            # The server `gateway serve` runs aiohttp with: its deadlines and caps included.
            server = LimitedTestServer(app, ClientLimits.from_settings(config))
            client = await aiohttp_client(server)
            key, key_id, user_id = await _create_reader(client.app[SERVICES], list(permissions))
            port = client.server.port
            assert port is not None
            return Gateway("aiohttp", client, upstream, key, key_id, user_id, port)

        yield make


def _env(tmp_path: Path, policy: Path, settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_MODE": "production",
            "GATEWAY_SECRET": secrets.token_hex(32),
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'keygate.db'}",
            "GATEWAY_POLICY": str(policy),
            "GATEWAY_DATA_DIR": str(tmp_path),
            "GATEWAY_FAST_DATA_PLANE": "true",
            "GATEWAY_LOG_LEVEL": "WARNING",
            # A stop waits this long for requests in flight (some tests leave one hanging);
            # within the 15 s stop() gives the process before killing it.
            "GATEWAY_SHUTDOWN_TIMEOUT": "10",
            "PYTHONPATH": str(ROOT),
        }
    )
    for name, value in settings.items():
        if name == "trusted_proxies":
            value = ",".join(str(ipaddress.ip_network(n)) for n in value)
        elif isinstance(value, tuple | list):
            value = ",".join(str(v) for v in value)
        env["GATEWAY_" + name.upper()] = str(value)
    return env


async def _wait_until_serving(port: int, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession() as session:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def front_gateways(tmp_path: Path) -> AsyncIterator[MakeGateway]:
    """`make(upstream, raw, unaccepting, permissions, log_to, out_to, **settings)` as a
    `gateway serve` process with the fast front; settings become GATEWAY_* variables, `log_to`
    a file that receives the process's log (stderr; else inherited), `out_to` one for its
    standard output (else discarded)."""
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def make(
            upstream: EchoUpstream | None = None,
            raw: RawUpstream | None = None,
            unaccepting: int | None = None,
            log_to: Path | None = None,
            permissions: tuple[str, ...] = ("t.read",),
            out_to: Path | None = None,
            **settings: Any,
        ) -> Gateway:
            upstream = await stack.enter_async_context(upstream or EchoUpstream())
            policy = write_policy(tmp_path, upstream, raw, unaccepting)
            env = _env(tmp_path, policy, settings)
            async with open_services(load_settings(environ=env)) as services:
                key, key_id, user_id = await _create_reader(services, list(permissions))
            port = free_port()
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{port}"),
                env=env,
                stdout=stack.enter_context(out_to.open("wb")) if out_to else subprocess.DEVNULL,
                stderr=stack.enter_context(log_to.open("wb")) if log_to else None,
            )

            async def stop() -> None:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        async with asyncio.timeout(15):
                            await proc.wait()
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()

            stack.push_async_callback(stop)
            await _wait_until_serving(port, proc)
            return Gateway(
                "front", Client(session, port), upstream, key, key_id, user_id, port, proc, env
            )

        yield make

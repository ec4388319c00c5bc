"""A real `gateway serve` process (and a real upstream) on free ports, for interop tests.

Real clients are synchronous (requests, curl), so the gateway must run outside the test's
event loop: a subprocess, started once per module, exactly as an operator starts it. Users
and keys are made through the same SQLite database with the same secret, the way the CLI
makes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from gateway.services import open_services
from gateway.settings import Settings
from gateway.store.base import User

ROOT = Path(__file__).resolve().parents[2]
POLICY = """
resource_types:
  store: Store
permissions:
  - name: reports.read
    title: Read reports
  - name: store.view
    title: View a store
    scope: store
upstreams:
  app:
    url: {url}
routes:
  - path: /api/reports/**
    methods: [GET]
    upstream: app
    permission: reports.read
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"{url} exited with {process.returncode}: {out[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {seconds} s")


@contextlib.contextmanager
def _process(args: Sequence[str], env: dict[str, str], probe: str) -> Iterator[None]:
    process = subprocess.Popen(
        list(args), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _wait(probe, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class LiveGateway:
    url: str
    settings: Settings

    def user(
        self,
        email: str,
        *,
        admin: bool = False,
        grants: Sequence[str] = (),
        password: str | None = None,
    ) -> User:
        async def run() -> User:
            async with open_services(self.settings) as services:
                return await services.users.create(
                    email=email,
                    password=password,
                    actor="test",
                    is_admin=admin,
                    is_service=password is None,
                    grants=grants,
                )

        return asyncio.run(run())

    def key(self, owner: User, permissions: Sequence[str] = (), path: str | None = None) -> str:
        async def run() -> str:
            async with open_services(self.settings) as services:
                new = await services.keys.create(
                    owner=owner,
                    creator=None,
                    label="interop",
                    permissions=permissions,
                    path_rule=path,
                )
                return new.text

        return asyncio.run(run())


@contextlib.contextmanager
def live_gateway(
    tmp: Path, *, policy_text: str = POLICY, catalogs: Sequence[Path] = (), **extra_env: str
) -> Iterator[LiveGateway]:
    """A demo upstream and a gateway in front of it, both real processes on free ports.

    `policy_text` (with `{url}` for the upstream) is loaded after the `catalogs` files."""
    upstream_port, gateway_port = free_port(), free_port()
    policy = tmp / "policy.yaml"
    policy.write_text(policy_text.format(url=f"http://127.0.0.1:{upstream_port}"))
    files = (*catalogs, policy)
    secret = secrets.token_hex(32)
    database = f"sqlite:///{tmp / 'keygate.db'}"
    env = {
        **os.environ,
        "GATEWAY_MODE": "development",
        "GATEWAY_DATABASE_URL": database,
        "GATEWAY_SECRET": secret,
        "GATEWAY_POLICY": ",".join(str(f) for f in files),
        "GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}",
        "GATEWAY_DATA_DIR": str(tmp / "var"),
        "GATEWAY_REDIS_URL": "",
        # Clients and the fuzzer here send many wrong keys from one address on purpose; the
        # failed-key budget (tested in tests/integration/test_key_budget.py) would turn their
        # expected 401s into 429s.
        "GATEWAY_KEY_MAX_FAILURES": "1000000",
    }
    env.pop("GATEWAY_CONFIG", None)
    env.update(extra_env)
    settings = Settings(
        mode="development",
        database_url=database,
        secret=secret.encode(),
        secret_source="test",
        policy=files,
    )
    upstream = [sys.executable, "-m", "gateway.demo", "--listen", f"127.0.0.1:{upstream_port}"]
    gateway = [sys.executable, "-m", "gateway", "serve"]
    url = f"http://127.0.0.1:{gateway_port}"
    with (
        _process(upstream, env, f"http://127.0.0.1:{upstream_port}/"),
        _process(gateway, env, f"{url}/healthz"),
    ):
        yield LiveGateway(url, settings)

"""Browser tests: the real app on a real port, a recording callback server, headless Chromium.

Chromium comes from the system (`/usr/bin/chromium`, Debian's package), never from
`playwright install` (which downloads a browser build and cannot work offline). On a clean
CI machine where it is missing and we are root, it is installed with apt-get; otherwise the
tests FAIL saying why: they never skip what they are there to check.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.services import Services
from gateway.state import SERVICES
from tests.conftest import make_settings

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _ensure_chromium() -> str:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(
            f"{CHROMIUM} is missing and this is not a root Debian machine: "
            "install it with `apt-get install -y chromium`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


# Package scope: the sync API keeps an event loop running in this thread while the browser
# is open, which would stop the async tests of other folders from running their own loop.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Headless system Chromium, driven by Playwright (sync API), for the whole run."""
    executable = _ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@dataclass
class Callback:
    """What the application's redirect endpoint received: one (path, fields) per POST."""

    posts: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.posts.append((request.path, [(k, str(v)) for k, v in form.items()]))
        return web.Response(
            text="<!doctype html><title>Gozo</title><h1>Gozo received the key</h1>",
            content_type="text/html",
        )


class Live:
    """The gateway and a callback server on real ports, on an event loop in a thread."""

    def __init__(self, database_url: str, **settings: Any) -> None:
        self.settings = make_settings(database_url, **settings)
        self.callback = Callback()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self.base = ""
        self.callback_base = ""
        self.services: Services | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _start(self) -> None:
        gateway = create_app(self.settings)
        self.base = await self._serve(gateway)
        self.services = gateway[SERVICES]
        callback = web.Application()
        callback.router.add_post("/{tail:.*}", self.callback.handle)
        self.callback_base = await self._serve(callback)

    async def _stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()

    def __enter__(self) -> Live:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with Live(f"sqlite:///{tmp_path / 'keygate.db'}") as running:
        yield running


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; fails the test on any CSP violation."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    violations: list[str] = []
    tab.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    yield tab
    context.close()
    assert not violations, f"CSP violations: {violations}"

"""Running the server: one process, or N worker processes sharing the port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable

from aiohttp import web

from gateway.app import create_app
from gateway.settings import Settings

log = logging.getLogger("gateway")
SHUTDOWN_TIMEOUT = 10.0


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _migrate(settings: Settings) -> None:
    async def run() -> None:
        from gateway.store import open_store

        store = await open_store(settings.database_url)
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(run())


def _bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.listen_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.workers > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.listen_host, settings.listen_port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _run_worker(settings: Settings, sock: socket.socket | None) -> None:
    _event_loop_policy()
    if sock is None:
        sock = _bind(settings)
    web.run_app(
        create_app(settings),
        sock=sock,
        print=None,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handle_signals=True,
    )


def serve(settings: Settings, *, announce: Callable[[str], None]) -> None:
    """Migrate once, then serve until SIGINT/SIGTERM."""
    _migrate(settings)
    announce(
        f"keygate {settings.mode} serving on http://{settings.listen} "
        f"({settings.workers} worker{'s' if settings.workers > 1 else ''}, "
        f"store {settings.database_url.split(':', 1)[0]}, "
        f"cache {'redis + in-process' if settings.redis_url else 'in-process'}, "
        f"policy {', '.join(map(str, settings.policy))})"
    )
    if settings.workers == 1:
        _run_worker(settings, None)
        return
    # Every worker binds its own socket with SO_REUSEPORT, so the kernel spreads
    # connections across them; the parent only supervises.
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_run_worker, args=(settings, None), name=f"keygate-worker-{i}")
        for i in range(settings.workers)
    ]
    for proc in procs:
        proc.start()

    def stop(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for proc in procs:
        proc.join()
    sys.exit(max((p.exitcode or 0) for p in procs))

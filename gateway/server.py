"""Running the server: one process, or N worker processes sharing the port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import Callable

from aiohttp import web

from gateway import admin_listener, logs, metrics
from gateway.app import create_app
from gateway.server_limits import ClientLimits, LimitedRunner
from gateway.settings import Settings
from gateway.state import SETTINGS

log = logging.getLogger("gateway")
SHUTDOWN_TIMEOUT = 10.0


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def freeze_startup_heap() -> None:
    """Hide what startup allocated (modules, the app, the policy, templates: tens of thousands
    of long-lived objects) from the cyclic garbage collector.

    Otherwise every full collection walks all of them again, a pause of milliseconds that
    lands on whichever requests are in flight; frozen, collections only see what requests
    allocate. Called once per worker, when it is about to serve.
    """
    gc.collect()
    gc.freeze()


async def _freeze_on_startup(_app: web.Application) -> None:
    freeze_startup_heap()


def _migrate(settings: Settings) -> None:
    async def run() -> None:
        from gateway.keys.secret_check import check_configured
        from gateway.store import open_store

        store = await open_store(settings.database_url, deadline=settings.database_timeout)
        try:
            await store.migrate()
            # Before any worker starts: a wrong secret stops the start with one line.
            await check_configured(store, settings)
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
    access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
    if settings.fast_data_plane:
        from gateway.proxy.front_server import serve_front  # only loaded when asked for

        asyncio.run(
            serve_front(settings, sock, access_log, SHUTDOWN_TIMEOUT, ready=freeze_startup_heap)
        )
        return
    app = create_app(settings)
    app.on_startup.append(_freeze_on_startup)  # after the cleanup contexts: services are up
    asyncio.run(_serve_app(app, sock, ClientLimits.from_settings(settings), access_log))


async def _serve_app(
    app: web.Application,
    sock: socket.socket,
    limits: ClientLimits,
    access_log: logging.Logger | None,
) -> None:
    """aiohttp on the public socket until SIGINT/SIGTERM (`web.run_app` cannot take the
    limited runner)."""
    runner = LimitedRunner(app, limits, access_log=access_log, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    gate = runner.gate
    metrics.watch_open_connections(lambda: gate.open)
    try:
        await web.SockSite(runner, sock).start()
        await admin_listener.start(runner, app[SETTINGS])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _spawned_worker(settings: Settings, number: int) -> None:
    """Entry point of a worker process: a fresh interpreter, so logging is set up again."""
    logs.configure(settings.log_level, settings.log_format, worker=number)
    try:
        sock = _bind(settings)
    except OSError as exc:
        print(
            f"gateway: worker {number}: cannot listen on {settings.listen} ({exc.strerror or exc})",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    _run_worker(settings, sock)


def serve(settings: Settings, *, announce: Callable[[str], None]) -> None:
    """Migrate once, then serve until SIGINT/SIGTERM."""
    # The CLI restores SIGPIPE's default so `gateway keys list | head` ends quietly; a server
    # must not inherit it: a client resetting its connection under a write would kill the
    # process. Ignored, the write fails with EPIPE and only that connection ends.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
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
    cleanup = metrics.prepare_workers(settings.workers)  # before any worker starts
    try:
        status = _supervise(settings)
    finally:
        cleanup()
    sys.exit(status)


def _supervise(settings: Settings) -> int:
    """Run the workers until a signal or a worker's death; the exit status to use.

    Every worker binds its own socket with SO_REUSEPORT, so the kernel spreads connections
    across them; the parent only supervises. A worker that dies unasked takes the others
    down with it: a gateway silently running at part capacity is worse than a restart.
    """
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_spawned_worker, args=(settings, i), name=f"keygate-worker-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def stop_all() -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for proc in procs:
        proc.start()
    failed = False
    running = {proc.sentinel: proc for proc in procs}
    while running:
        for sentinel in multiprocessing.connection.wait(list(running)):
            assert isinstance(sentinel, int)  # process sentinels are file descriptors
            proc = running.pop(sentinel)
            proc.join()
            metrics.worker_exited(proc.pid)
            if not stopping:
                log.error("%s exited (status %s); stopping the others", proc.name, proc.exitcode)
                failed = stopping = True
                stop_all()
    if failed:
        return 1
    return max((proc.exitcode or 0) for proc in procs)

"""Running the server: a master process (supervisor.py) and N workers serving one listening
socket; this module is what a worker runs."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection

from aiohttp import web

from gateway import admin_listener, logs, metrics, reload
from gateway.app import create_app
from gateway.policy.loader import load_policy
from gateway.server_limits import ClientLimits, LimitedRunner
from gateway.settings import Settings
from gateway.state import SERVICES, SETTINGS
from gateway.supervisor import FAILED, READY, Supervisor, listen
from gateway.worker import die_with_master, failure_line, hear_master, serve_until_stopped

log = logging.getLogger("gateway")


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


def _run_worker(
    settings: Settings, sock: socket.socket, ready: Callable[[], None], master: int
) -> None:
    _event_loop_policy()
    # Always handed over: whether a line is written follows `access_log`, which a settings
    # reload may change (logs.set_access_log).
    logs.set_access_log(settings.access_log)
    access_log = logging.getLogger("aiohttp.access")
    if settings.fast_data_plane:
        from gateway.proxy.front_server import serve_front  # only loaded when asked for

        asyncio.run(
            serve_front(
                settings, sock, access_log, settings.shutdown_timeout, ready=ready, master=master
            )
        )
        return
    app = create_app(settings)
    limits = ClientLimits.from_settings(settings)
    asyncio.run(_serve_app(app, sock, limits, access_log, settings.shutdown_timeout, ready, master))


async def _serve_app(
    app: web.Application,
    sock: socket.socket,
    limits: ClientLimits,
    access_log: logging.Logger | None,
    shutdown: float,
    ready: Callable[[], None],
    master: int,
) -> None:
    """aiohttp on the public socket until SIGTERM (`web.run_app` cannot take the limited
    runner); the requests in flight then get `shutdown` seconds to finish."""
    runner = LimitedRunner(app, limits, access_log=access_log, shutdown_timeout=shutdown)
    await runner.setup()
    gate = runner.gate
    metrics.watch_open_connections(lambda: gate.open)
    try:
        # The backlog again: the site listens anew on `sock`, by default with 128.
        await web.SockSite(runner, sock, backlog=app[SETTINGS].listen_backlog).start()
        await admin_listener.start(runner, app[SETTINGS])
        ready()
        await serve_until_stopped(app[SERVICES], master)
    finally:
        await runner.cleanup()


def _spawned_worker(
    settings: Settings, number: int, sock: socket.socket, report: Connection, master: int
) -> None:
    """Entry point of a worker process (a fresh interpreter, so logging is set up again).

    It says "ready" on `report` once it serves, or why it could not start (one line, no
    traceback: the master prints it and stops); a failure after that is logged in one line
    and the master starts the worker again."""
    die_with_master(master)
    logs.configure(settings.log_level, settings.log_format, worker=number)
    reload.supervised_by(master)
    hear_master(report)
    serving = False

    def ready() -> None:
        nonlocal serving
        freeze_startup_heap()
        serving = True
        report.send(READY)

    try:
        _run_worker(settings, sock, ready, master)
    except Exception as exc:  # noqa: BLE001 - told as one line, never a traceback
        if not serving:
            report.send((FAILED, failure_line(exc)))
        else:
            log.error("worker %d stopped: %s", number, failure_line(exc))
        sys.exit(1)


def serve(
    settings: Settings,
    *,
    announce: Callable[[str], None],
    reread: Callable[[], Settings] | None = None,
) -> None:
    """Check the policy, take the address, migrate, then run the workers under this master
    process until SIGTERM/SIGINT (supervisor.py); every failure to start is one line.
    `reread()` reads the settings again for a reload, as they were read for this start."""
    # The CLI restores SIGPIPE's default so `gateway keys list | head` ends quietly; a server
    # must not inherit it: a client resetting its connection under a write would kill the
    # process. Ignored, the write fails with EPIPE and only that connection ends.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    load_policy(settings.policy)  # PolicyError: one line here, before any worker starts
    try:
        sock = listen(settings)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        hint = " (another process serves it)" if exc.errno == errno.EADDRINUSE else ""
        raise SystemExit(f"gateway: cannot listen on {settings.listen}: {reason}{hint}") from None
    try:
        _migrate(settings)
    except BaseException:
        sock.close()
        raise

    def banner() -> None:
        announce(
            f"keygate {settings.mode} serving on http://{settings.listen} "
            f"({settings.workers} worker{'s' if settings.workers > 1 else ''}, "
            f"store {settings.database_url.split(':', 1)[0]}, "
            f"cache {'redis + in-process' if settings.redis_url else 'in-process'}, "
            f"policy {', '.join(map(str, settings.policy))})"
        )

    cleanup = metrics.prepare_workers(settings.workers)  # before any worker starts
    try:
        status = Supervisor(settings, sock, _spawned_worker, banner, reread).run()
    finally:
        cleanup()
    sys.exit(status)

"""A worker process's ties to its master: dying with it, signals, and how a failure to start
is told (supervisor.py is the master's side).

A worker serves until SIGINT or SIGTERM, then drains (`shutdown_timeout`). SIGHUP reloads the
policy (reload.py); settings a reload changed, and the master's count of worker restarts,
come on the pipe from the master (`hear_master`).

It never outlives its master: on Linux the kernel sends it SIGTERM when the master dies
(PR_SET_PDEATHSIG), and everywhere a watch on the parent's pid does the same within a second,
should the signal not come (another platform, or a race at the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from gateway import metrics, reload, settings_reload
from gateway.errors import GatewayError
from gateway.policy.loader import PolicyError
from gateway.services import Services
from gateway.settings import SettingsError
from gateway.store.base import StoreError
from gateway.supervisor import RESTARTS, SETTINGS

log = logging.getLogger("gateway")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
MASTER_WATCH_SECONDS = 1.0
_from_master: list[Connection] = []  # the pipe the master's messages come on, once supervised


def hear_master(pipe: Connection) -> None:
    """Called once in a worker: once it serves, it acts on the master's messages on `pipe`."""
    _from_master[:] = [pipe]


def die_with_master(master: int) -> None:
    """Have the kernel send SIGTERM when the master dies (Linux), and stop at once if it is
    already gone (it may have died before the request was made).

    Until the worker serves, SIGHUP (a reload the master forwards) and SIGINT (Ctrl-C reaches
    the whole process group; the master answers it) are ignored: the policy is read at the
    start anyway, and a worker must not die of either while it starts.
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != master:
        sys.exit(0)


async def serve_until_stopped(services: Services, master: int | None) -> None:
    """Return on SIGINT or SIGTERM, or once the master is gone; reload on SIGHUP."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Supervised, SIGINT is the master's to answer (it sends SIGTERM).
    for signum in (signal.SIGTERM,) if master is not None else (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()  # held: the loop holds tasks weakly

    def hang_up() -> None:
        task = loop.create_task(_reload(services))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hang_up)
    pipe = _from_master[0] if _from_master and master is not None else None
    if pipe is not None:
        loop.add_reader(pipe.fileno(), _read_master, pipe, loop)
    watch = loop.create_task(_watch_master(master, stop)) if master is not None else None
    try:
        await stop.wait()
    finally:
        if pipe is not None:
            loop.remove_reader(pipe.fileno())
        loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not its default (the end) while draining
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


async def _reload(services: Services) -> None:
    with contextlib.suppress(PolicyError):  # logged and counted by reload_policy
        await reload.reload_policy(services)


def _read_master(pipe: Connection, loop: asyncio.AbstractEventLoop) -> None:
    try:
        while pipe.poll():
            _obey(pipe.recv())
    except (EOFError, OSError):  # the master is gone: _watch_master stops this worker
        loop.remove_reader(pipe.fileno())


def _obey(message: Any) -> None:
    kind, value = message
    if kind == SETTINGS:
        settings_reload.apply(value)
        log.info("settings reloaded: %s", settings_reload.describe(value))
    elif kind == RESTARTS:
        metrics.worker_restarts(value)


async def _watch_master(master: int, stop: asyncio.Event) -> None:
    # A poll: nothing signals a parent's end (PR_SET_PDEATHSIG does, on Linux only).
    while os.getppid() == master:  # noqa: ASYNC110 - no event exists to wait on instead
        await asyncio.sleep(MASTER_WATCH_SECONDS)
    log.warning("the master process is gone; stopping")
    stop.set()


def failure_line(exc: BaseException) -> str:
    """One line for a worker that could not start, as the CLI words the same failures."""
    if isinstance(exc, SettingsError | PolicyError):
        return reload.first_line(exc)
    if isinstance(exc, StoreError):
        return f"database: {reload.first_line(exc)}"
    if isinstance(exc, GatewayError):
        return exc.message
    if isinstance(exc, OSError):
        return exc.strerror or reload.first_line(exc)
    return f"{type(exc).__name__}: {reload.first_line(exc)}"

"""The master process of `gateway serve`: it owns the listening socket and supervises the
workers (worker.py is their side).

    master ── binds host:port once (no SO_REUSEPORT: a second instance is refused)
      ├── worker 0 ─┐ each inherits the socket, reports "ready" (or why it could not
      └── worker 1 ─┘ start) on a pipe, and dies with the master
    SIGTERM/SIGINT  → SIGTERM to every worker; each drains for `shutdown_timeout`
    SIGHUP          → the settings are read again and the policy is validated here; the
                      settings that may change (settings_reload.py) are sent to every
                      worker on its pipe, then SIGHUP to every worker (the policy)
    a worker dies   → started again after a back-off (0.25 s doubling to 30 s; reset once a
                      worker has served for a minute); logged and counted
    a worker fails to start at launch → the others are stopped, its one line is printed,
                      exit status 1 (no "serving on" banner)

Signals are taken through a wakeup fd, so the master's loop is one `wait()` on the workers'
sentinels and pipes, the signals and the next restart that is due.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from gateway import metrics, settings_reload
from gateway.policy.loader import load_policy
from gateway.settings import Settings

log = logging.getLogger("gateway")

READY = "ready"  # worker → master: it serves
FAILED = "failed"  # worker → master: (FAILED, why it could not start)
SETTINGS = "settings"  # master → worker: (SETTINGS, {reloadable setting: new value})
RESTARTS = "restarts"  # master → worker: (RESTARTS, workers restarted so far), for metrics
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 30.0
STABLE_SECONDS = 60.0  # a worker that served this long starts its back-off afresh
# Beyond `shutdown_timeout`: time for a drained worker to close its services and exit.
STOP_GRACE = 5.0

WorkerTarget = Callable[[Settings, int, socket.socket, Connection, int], None]


@dataclass(slots=True)
class Counts:
    """The master's counters, for metrics: workers started again after dying, and reloads
    refused here because the settings or the policy did not validate (the workers were not
    asked)."""

    restarts: int = 0
    reload_failures: int = 0


COUNTS = Counts()


def listen(settings: Settings) -> socket.socket:
    """The one listening socket every worker serves. Without SO_REUSEPORT, binding fails
    while any other process listens on the address, another `gateway serve` included.
    Raises OSError."""
    family = socket.AF_INET6 if ":" in settings.listen_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Only lets a restart bind while connections of the last run linger in TIME_WAIT;
        # on Linux it never admits a second listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.listen_host, settings.listen_port))
        sock.listen(settings.listen_backlog)
    except OSError:
        sock.close()
        raise
    return sock


def backoff(failures: int) -> float:
    """Seconds before starting a worker again after `failures` deaths in a row."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * float(2 ** min(failures, 32)))


@dataclass(slots=True)
class _Worker:
    number: int
    proc: BaseProcess | None = None
    report: Connection | None = None
    ready: bool = False
    started: float = 0.0
    failures: int = 0  # deaths in a row without serving STABLE_SECONDS: the back-off
    due: float | None = None  # when to start it again (monotonic)
    said: str = ""  # why it could not start, as it reported


@dataclass
class Supervisor:
    """Runs `target` in `settings.workers` processes on `sock`; `announce()` once all serve.
    `reread()` reads the settings again as they were read at start, for a reload (without
    it, a reload re-reads the policy only)."""

    settings: Settings
    sock: socket.socket
    target: WorkerTarget
    announce: Callable[[], None]
    reread: Callable[[], Settings] | None = None
    workers: list[_Worker] = field(default_factory=list, init=False)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT: the exit status (1: a worker could not start)."""
        wake, poke = socket.socketpair()  # the kernel's signals come out of `wake`
        for end in (wake, poke):
            end.setblocking(False)
        signal.set_wakeup_fd(poke.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _noted)
        try:
            self.workers = [_Worker(n) for n in range(self.settings.workers)]
            for worker in self.workers:
                self._start(worker)
            status = self._launch(wake)
            if status is None:
                self.announce()
                self._supervise(wake)
                status = 0
            return status
        finally:
            self._stop_all()
            signal.set_wakeup_fd(-1)
            wake.close()
            poke.close()

    # -- phases ----------------------------------------------------------------------------

    def _launch(self, wake: socket.socket) -> int | None:
        """Wait until every worker serves: None, or the exit status when one could not."""
        reload_asked = False
        while not all(w.ready for w in self.workers):
            for signum in self._wait(wake, None):
                if signum == signal.SIGHUP:
                    reload_asked = True  # told to the workers once they all serve
                else:
                    return 0
            for worker in self.workers:
                if worker.proc is not None and not worker.proc.is_alive() and not worker.ready:
                    worker.proc.join()
                    why = worker.said or _exit_text(worker.proc.exitcode)
                    print(f"gateway: worker {worker.number}: {why}", file=sys.stderr, flush=True)
                    return 1
        if reload_asked:
            self._reload()
        return None

    def _supervise(self, wake: socket.socket) -> None:
        while True:
            now = time.monotonic()
            dues = [w.due for w in self.workers if w.due is not None]
            timeout = max(0.0, min(dues) - now) if dues else None
            for signum in self._wait(wake, timeout):
                if signum == signal.SIGHUP:
                    self._reload()
                else:
                    log.info("stopping: the workers finish what is in flight")
                    return
            now = time.monotonic()
            for worker in self.workers:
                proc = worker.proc
                if proc is not None and not proc.is_alive():
                    self._died(worker, proc, now)
                elif worker.due is not None and worker.due <= now:
                    self._start(worker)

    # -- workers ---------------------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        ctx = multiprocessing.get_context("spawn")
        report, child_end = ctx.Pipe()  # both ways: reports up, reloaded settings down
        proc = ctx.Process(
            target=self.target,
            args=(self.settings, worker.number, self.sock, child_end, os.getpid()),
            name=f"keygate-worker-{worker.number}",
        )
        proc.start()
        child_end.close()
        with contextlib.suppress(OSError):  # it died already: its sentinel tells
            report.send((RESTARTS, COUNTS.restarts))
        worker.proc, worker.report = proc, report
        worker.ready, worker.said, worker.due = False, "", None
        worker.started = time.monotonic()

    def _died(self, worker: _Worker, proc: BaseProcess, now: float) -> None:
        proc.join()
        metrics.worker_exited(proc.pid)  # its live gauges leave the sums
        if worker.report is not None:
            worker.report.close()
        worker.proc = worker.report = None
        if now - worker.started >= STABLE_SECONDS:
            worker.failures = 0
        delay = backoff(worker.failures)
        worker.failures += 1
        worker.due = now + delay
        COUNTS.restarts += 1
        how = worker.said or _exit_text(proc.exitcode)
        log.error("worker %d %s; starting it again in %.2fs", worker.number, how, delay)

    def _wait(self, wake: socket.socket, timeout: float | None) -> list[int]:
        """Wait for a signal, a report or a worker's end: the signals that came."""
        watched: list[Any] = [wake]
        for worker in self.workers:
            if worker.proc is not None:
                watched.append(worker.proc.sentinel)
            if worker.report is not None:
                watched.append(worker.report)
        for ready in multiprocessing.connection.wait(watched, timeout):
            if ready is not wake:
                self._heard(ready)
        try:
            return list(wake.recv(64))
        except BlockingIOError:
            return []

    def _heard(self, ready: object) -> None:
        for worker in self.workers:
            if worker.report is not None and ready is worker.report:
                try:
                    message = worker.report.recv()
                except (EOFError, OSError):  # it exited; its sentinel tells the rest
                    worker.report.close()
                    worker.report = None
                    return
                if message == READY:
                    if worker.failures and not worker.ready:
                        log.info("worker %d serves again", worker.number)
                    worker.ready = True
                elif isinstance(message, tuple) and message[0] == FAILED:
                    worker.said = f"could not start: {message[1]}"
                return

    def _reload(self) -> None:
        """Read the settings and validate the policy here first: a broken one is one line in
        this log, and no worker is disturbed. Then every serving worker takes the settings
        that changed and may change, and reloads the policy."""
        if not self._reload_settings():
            return
        try:
            policy = load_policy(self.settings.policy)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the workers' policy
            COUNTS.reload_failures += 1
            log.error("policy reload refused; the workers keep theirs: %s", _first_line(exc))
            return
        serving = [w for w in self.workers if w.proc is not None and w.proc.pid is not None]
        log.info("reloading policy %s in %d worker(s)", policy.digest[:12], len(serving))
        for worker in serving:
            _signal(worker, signal.SIGHUP)

    def _reload_settings(self) -> bool:
        """Read the settings again; False (logged, counted) when they do not validate."""
        if self.reread is None:
            return True
        try:
            read = self.reread()
        except Exception as exc:  # noqa: BLE001 - any failure keeps the running settings
            COUNTS.reload_failures += 1
            log.error("reload refused; the settings and policy stay: %s", _first_line(exc))
            return False
        live, fixed = settings_reload.compare(self.settings, read)
        if fixed:
            log.warning("changed settings need a restart to apply: %s", ", ".join(fixed))
        if live:
            self.settings = replace(self.settings, **live)  # workers started later too
            settings_reload.apply(live)
            log.info("settings reloaded: %s", settings_reload.describe(live))
            for worker in self.workers:
                if worker.report is not None:
                    with contextlib.suppress(OSError):  # it is ending; it restarts with them
                        worker.report.send((SETTINGS, live))
        return True

    def _stop_all(self) -> None:
        """SIGTERM to every worker; SIGKILL to any still there after the drain and a grace."""
        running = [w.proc for w in self.workers if w.proc is not None]
        for worker in self.workers:
            _signal(worker, signal.SIGTERM)
        self.sock.close()  # the workers hold their own copies
        deadline = time.monotonic() + self.settings.shutdown_timeout + STOP_GRACE
        for proc in running:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("%s did not stop in time; killing it", proc.name)
                proc.kill()
                proc.join()


def _noted(_signum: int, _frame: object) -> None:
    """Signals are read from the wakeup fd; the handler only has to exist."""


def _signal(worker: _Worker, signum: int) -> None:
    proc = worker.proc
    if proc is not None and proc.pid is not None and proc.is_alive():
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            os.kill(proc.pid, signum)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"

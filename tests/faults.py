"""Throwaway PostgreSQL and Redis servers that a test may hang (SIGSTOP) and resume.

Never the shared servers: each server here is started for the test from local binaries, on a
free port, and stopped by its process id. `hung(server)` stops every process of the server
(PostgreSQL's postmaster and its backends), so it keeps its sockets open and answers nothing,
which is how a server behind a dead network link or a stalled VM looks; it always resumes
them on the way out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.services import _free_port, _pg_binary, _wait_port


@dataclass(frozen=True)
class Server:
    url: str
    pid: int  # the main process; its children are found when hanging it

    def pids(self) -> list[int]:
        """The main process and all its descendants."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may contain spaces: split after it.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found


@contextlib.contextmanager
def hung(server: Server) -> Iterator[None]:
    """The server stopped (SIGSTOP) inside the block, resumed (SIGCONT) after it."""
    stopped = []
    try:
        for pid in server.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Server]:
    """A PostgreSQL server of our own (initdb + pg_ctl), URL to its `postgres` database."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    assert initdb is not None, "no initdb binary: the hung-server tests need local PostgreSQL"
    assert pg_ctl is not None, "no pg_ctl binary: the hung-server tests need local PostgreSQL"
    data = tempfile.mkdtemp(prefix="keygate-hung-pg-")
    port = _free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    pid = 0
    try:
        subprocess.run(
            [*run_as, initdb, "-D", data, "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                data,
                "-o",
                f"-p {port} -k {data} -h 127.0.0.1",
                "-l",
                f"{data}/log",
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        pid = int((Path(data) / "postmaster.pid").read_text().split()[0])
        yield Server(f"postgresql://postgres@127.0.0.1:{port}/postgres", pid)
    finally:
        if pid:
            # Resumed first: a stopped postmaster would not act on the signal to stop.
            for each in Server("", pid).pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(each, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown
            _wait_gone(pid)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def throwaway_redis() -> Iterator[Server]:
    """A redis-server of our own on a free port."""
    binary = shutil.which("redis-server")
    assert binary is not None, "no redis-server binary: the hung-server tests need it"
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield Server(f"redis://127.0.0.1:{port}/0", proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)


def _wait_gone(pid: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":  # exited; reaping it is its parent's business
            return
        time.sleep(0.05)

"""The `gateway` command's start-up and output polish, run as a real subprocess: --version,
--json listings, warnings for misspelt GATEWAY_* variables, Ctrl-D and Ctrl-C at a password
prompt (on a real pseudo-terminal), and the address in the serve banner."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from gateway.keys import format as keyformat
from tests.integration.test_cli import (
    PYTHON,
    Gateway,
    base_env,
    closed_port,
    create_user,
    ok,
    runner,
)

USER_FIELDS = {"id", "email", "admin", "service", "disabled", "grants", "created_at"}
KEY_FIELDS = {
    "id",
    "masked",
    "user_id",
    "label",
    "status",
    "permissions",
    "path",
    "created_at",
    "expires_at",
    "last_used_at",
    "application_identifier",
    "redirect_origin",
    "legacy",
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path, f"sqlite:///{tmp_path / 'db'}")


@pytest.fixture
def gateway(tmp_path: Path, env: dict[str, str]) -> Gateway:
    return runner(tmp_path, env)


def test_version(gateway: Gateway) -> None:
    """`gateway --version` prints the installed package's version and exits 0."""
    result = gateway("--version")
    assert ok(result).strip() == f"keygate {version('keygate')}"
    assert result.stderr == ""


def test_users_list_json(gateway: Gateway) -> None:
    """`users list --json` is one JSON array with stable fields, and no password hash."""
    assert ok(gateway("users", "list", "--json")).strip() == "[]"
    create_user(gateway, "admin@example.com", "--admin")
    create_user(gateway, "bob@example.com", "--grant", "demo.reports.read")
    ok(gateway("users", "create", "robot@example.com", "--service"))
    ok(gateway("users", "disable", "bob@example.com"))
    out = ok(gateway("users", "list", "--json"))
    users = {u["email"]: u for u in json.loads(out)}
    assert set(users) == {"admin@example.com", "bob@example.com", "robot@example.com"}
    for user in users.values():
        assert set(user) == USER_FIELDS
    assert users["admin@example.com"]["admin"] is True
    assert users["robot@example.com"]["service"] is True
    assert users["bob@example.com"]["disabled"] is True
    assert users["bob@example.com"]["grants"] == ["demo.reports.read"]
    assert users["bob@example.com"]["admin"] is False
    assert "argon2" not in out
    # The text listing names the same ids.
    text = ok(gateway("users", "list"))
    assert all(user["id"] in text for user in users.values())


def test_keys_list_json(gateway: Gateway, tmp_path: Path) -> None:
    """`keys list --json` is one JSON array with stable fields: never the key or its hash."""
    create_user(gateway, "bob@example.com", "--grant", "demo.reports.read")
    assert ok(gateway("keys", "list", "--user", "bob@example.com", "--json")).strip() == "[]"
    key = ok(
        gateway(
            "keys",
            "create",
            "--user",
            "bob@example.com",
            "--label",
            "nightly",
            "--permission",
            "demo.reports.read",
            "--path",
            "/api/reports",
            "--expires",
            "30d",
        )
    ).strip()
    out = ok(gateway("keys", "list", "--user", "bob@example.com", "--json"))
    (listed,) = json.loads(out)
    assert set(listed) == KEY_FIELDS
    assert keyformat.parse(key, "apk").key_id == listed["id"]
    assert listed["label"] == "nightly"
    assert listed["status"] == "active"
    assert listed["permissions"] == ["demo.reports.read"]
    assert listed["path"] == "/api/reports"
    assert listed["expires_at"] is not None
    assert listed["last_used_at"] is None
    assert "***" in listed["masked"]
    with contextlib.closing(sqlite3.connect(tmp_path / "db")) as db:
        (stored,) = db.execute("SELECT key_hash FROM api_keys").fetchone()
    digest = stored if isinstance(stored, bytes) else str(stored).encode()
    assert key not in out
    assert key.split("_", 1)[1] not in out
    for shown in (digest.hex(), base64.b64encode(digest).decode(), str(stored)):
        assert shown not in out


def test_unknown_gateway_variables_are_warned(gateway: Gateway) -> None:
    """Each GATEWAY_* variable that is no setting gets one warning line on stderr, with the
    closest real name; the command still runs. Real settings and the test suite's own
    variables are not warned about."""
    result = gateway(
        "users",
        "list",
        env_changes={
            "GATEWAY_LISTN": "127.0.0.1:9000",
            "GATEWAY_REDIS_URI": "redis://127.0.0.1:6379/0",
            "GATEWAY_NOTHING_LIKE_IT": "1",
            "GATEWAY_TEST_REDIS_URL": "redis://127.0.0.1:6379/3",
            "GATEWAY_LOG_LEVEL": "WARNING",
        },
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "gateway: warning: GATEWAY_LISTN is not a Keygate setting and is ignored; "
        "did you mean GATEWAY_LISTEN?",
        "gateway: warning: GATEWAY_NOTHING_LIKE_IT is not a Keygate setting and is ignored",
        "gateway: warning: GATEWAY_REDIS_URI is not a Keygate setting and is ignored; "
        "did you mean GATEWAY_REDIS_URL?",
    ]
    assert "Traceback" not in result.stderr
    # No warning at all when every variable is a setting.
    assert "warning" not in gateway("users", "list").stderr


# ---- a password prompt on a real terminal ---------------------------------------------------


@contextlib.contextmanager
def on_terminal(cwd: Path, env: dict[str, str], *args: str) -> Iterator[Terminal]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        try:
            # As a shell starts a command in a terminal: Ctrl-C's signal at its default and not
            # blocked, whatever the test run inherited (a run started in the background of a
            # script has SIGINT ignored, and that survives exec: Ctrl-C then did nothing and
            # the test waited out its 60 s in two full runs).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            os.chdir(cwd)
            os.execve(PYTHON, [PYTHON, "-m", "gateway", *args], env)  # noqa: S606 - our own CLI, no shell
        finally:
            os._exit(127)
    terminal = Terminal(pid, fd)
    try:
        yield terminal
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


class Terminal:
    """The master side of a pseudo-terminal running `gateway`: what it showed, what to type."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd
        self.shown = ""

    def _read(self, deadline: float) -> bool:
        """Read what is there; False at the end of output."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed its side
            return False
        self.shown += data.decode(errors="replace")
        return bool(data)

    def wait_for(self, text: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.shown:
            assert time.monotonic() < deadline, f"never showed {text!r}: {self.shown!r}"
            assert self._read(deadline), f"ended without showing {text!r}: {self.shown!r}"

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_status(self, seconds: float = 60) -> int:
        deadline = time.monotonic() + seconds
        while self._read(deadline):
            assert time.monotonic() < deadline, f"still running: {self.shown!r}"
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize(
    ("typed", "status", "message"),
    [
        pytest.param([b"\x04"], 1, "gateway: no password given", id="ctrl-d-first-prompt"),
        pytest.param(
            [b"a good long password\n", b"\x04"], 1, "gateway: no password given", id="ctrl-d-again"
        ),
        pytest.param([b"\x03"], 130, "gateway: interrupted", id="ctrl-c"),
    ],
)
def test_password_prompt_ctrl_d_and_ctrl_c(
    gateway: Gateway,
    tmp_path: Path,
    env: dict[str, str],
    typed: list[bytes],
    status: int,
    message: str,
) -> None:
    """Ctrl-D or Ctrl-C at a password prompt ends the command with one line and a non-zero
    status, never a traceback, and creates no user."""
    ok(gateway("migrate"))
    with on_terminal(tmp_path, env, "users", "create", "bob@example.com") as terminal:
        for prompt, data in zip(("Password: ", "Again: "), typed, strict=False):
            terminal.wait_for(prompt)
            terminal.type(data)
        assert terminal.exit_status() == status, terminal.shown
    lines = [line.strip() for line in terminal.shown.splitlines() if line.strip()]
    assert message in lines[-1]
    assert lines[-1].startswith("gateway: ")
    assert "Traceback" not in terminal.shown
    assert ok(gateway("users", "list")) == ""


# ---- the serve banner -------------------------------------------------------------------------


def test_serve_banner_shows_the_configured_address(tmp_path: Path, env: dict[str, str]) -> None:
    """`gateway serve` announces the address it really listens on, from GATEWAY_LISTEN."""
    port = closed_port()
    serve_env = {**env, "GATEWAY_LISTEN": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [PYTHON, "-m", "gateway", "serve"],
        cwd=tmp_path,
        env=serve_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "serving on" not in banner and time.monotonic() < deadline:
            banner = proc.stdout.readline()
            assert banner or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert f"serving on http://127.0.0.1:{port} " in banner
        assert ":8080" not in banner
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

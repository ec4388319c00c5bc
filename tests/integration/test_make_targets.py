"""The Makefile, read by the real `make` (a dry run, `make -n`, in a throwaway virtual
environment folder): what `make run` installs and the address it prints."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dry_run(tmp_path: Path, *targets: str, **env: str) -> str:
    """The commands `make` would run for `targets` on a fresh clone (no virtual environment)."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed (apt-get install -y make)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    result = subprocess.run(
        [make, "-n", f"VENV={tmp_path / 'venv'}", *targets],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    """On a fresh clone `make run` creates the environment and installs Keygate without the
    dev extra; `make test` and `make lint` install the dev extra as well."""
    run = dry_run(tmp_path, "run")
    assert "-m venv" in run
    assert "pip install -e ." in run
    assert "[dev]" not in run
    for target in ("test", "lint"):
        out = dry_run(tmp_path, target)
        assert "-m venv" in out
        assert "pip install -e ." in out
        assert "pip install -e '.[dev]'" in out


def test_make_run_prints_and_serves_the_configured_address(tmp_path: Path) -> None:
    """The hint `make run` prints and the address it serves on follow GATEWAY_LISTEN (and
    LISTEN=); 127.0.0.1:8080 otherwise."""
    default = dry_run(tmp_path, "run")
    assert "http://127.0.0.1:8080/api/reports/daily" in default
    assert "GATEWAY_LISTEN=127.0.0.1:8080 " in default

    moved = dry_run(tmp_path, "run", GATEWAY_LISTEN="127.0.0.1:9123")
    assert "http://127.0.0.1:9123/api/reports/daily" in moved
    assert "GATEWAY_LISTEN=127.0.0.1:9123 " in moved
    assert ":8080" not in moved

    given = dry_run(tmp_path, "run", "LISTEN=127.0.0.1:9124")
    assert "http://127.0.0.1:9124/api/reports/daily" in given
    assert "GATEWAY_LISTEN=127.0.0.1:9124 " in given

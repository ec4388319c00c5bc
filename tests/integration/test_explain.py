"""`gateway policy explain`: the CLI states the decision for a key and a request, with reasons
(run as a subprocess against a SQLite database prepared through the CLI itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Cli:
    def __init__(self, folder: Path) -> None:
        self.env = {
            **os.environ,
            "GATEWAY_MODE": "development",
            "GATEWAY_DATABASE_URL": f"sqlite:///{folder / 'keygate.db'}",
            "GATEWAY_DATA_DIR": str(folder / "var"),
            "GATEWAY_POLICY": str(ROOT / "policies" / "example.yaml"),
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
        for name in (
            "GATEWAY_CONFIG",
            "GATEWAY_REDIS_URL",
            "GATEWAY_SECRET",
            "GATEWAY_SECRET_FILE",
        ):
            self.env.pop(name, None)

    def run(self, *args: str, stdin: str = "", ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert (done.returncode == 0) is ok, done.stderr
        return done

    def key(self, *args: str) -> str:
        """Create a key; its public id."""
        text = self.run("keys", "create", "--user", "ann@example.com", *args).stdout.strip()
        return text[:20]

    def explain(self, key_id: str, method: str, target: str) -> list[str]:
        return self.run("policy", "explain", "--key-id", key_id, method, target).stdout.splitlines()


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("explain"))
    cli.run(
        "users",
        "create",
        "ann@example.com",
        "--grant",
        "demo.store.canviewinvoices:S1",
        "--grant",
        "demo.reports.read",
        "--password-stdin",
        stdin="correct horse battery staple\n",
    )
    return cli


@pytest.fixture(scope="module")
def keys(cli: Cli) -> dict[str, str]:
    found = {
        "store": cli.key("--permission", "demo.store.canviewinvoices:S1"),
        "reports": cli.key("--permission", "demo.reports.read", "--path", "=/api/reports/daily"),
        "disabled": cli.key("--permission", "demo.reports.read"),
    }
    cli.run("keys", "disable", found["disabled"])
    return found


def decision(lines: list[str]) -> str:
    assert lines[-1].startswith("decision: "), lines
    return lines[-1].removeprefix("decision: ")


def test_an_allowed_request_shows_key_owner_route_and_requirement(
    cli: Cli, keys: dict[str, str]
) -> None:
    """ALLOW names the key, the owner's grants, the route matched and what it requires."""
    lines = cli.explain(keys["store"], "get", "/api/v1/stores/S1/invoices?page=2")
    assert decision(lines) == "ALLOW"
    text = "\n".join(lines)
    assert f"key:      {keys['store']} of ann@example.com (active)" in text
    assert "owner:    grants demo.store.canviewinvoices:S1 demo.reports.read" in text
    assert "request:  GET /api/v1/stores/S1/invoices?page=2" in text
    assert "route:    /api/v1/stores/{storeId}/invoices [GET] -> demo" in text
    assert "requires: demo.store.canviewinvoices:{storeId}" in text


@pytest.mark.parametrize(
    ("key", "method", "target", "expected"),
    [
        (
            "store",
            "GET",
            "/api/v1/stores/S2/invoices",
            "DENY 403 missing-permission: requires demo.store.canviewinvoices:S2",
        ),
        (
            "store",
            "POST",
            "/api/v1/stores/S1/invoices",
            "DENY 403 missing-permission: requires demo.store.canmodifystoresettings:S1",
        ),
        (
            "reports",
            "GET",
            "/api/reports/weekly",
            "DENY 403 path-not-allowed: the key is limited to =/api/reports/daily",
        ),
        ("reports", "GET", "/nowhere", "DENY 404 no-route: no route for GET /nowhere"),
        ("reports", "GET", "/%2e%2e/api/reports/daily", "DENY 400 dot-segment-escape: "),
        ("disabled", "GET", "/api/reports/daily", "DENY 401 key-disabled"),
    ],
)
def test_a_denied_request_states_its_reason(
    cli: Cli, keys: dict[str, str], key: str, method: str, target: str, expected: str
) -> None:
    """DENY gives the status and the reason: missing permission, path rule, route, target,
    key state."""
    assert decision(cli.explain(keys[key], method, target)).startswith(expected)


def test_explain_follows_the_owners_current_grants(cli: Cli, keys: dict[str, str]) -> None:
    """Taking a grant from the owner turns the key's ALLOW into a DENY."""
    assert decision(cli.explain(keys["reports"], "GET", "/api/reports/daily")) == "ALLOW"
    cli.run("users", "revoke-grant", "ann@example.com", "demo.reports.read")
    try:
        assert decision(cli.explain(keys["reports"], "GET", "/api/reports/daily")) == (
            "DENY 403 missing-permission: requires demo.reports.read"
        )
    finally:
        cli.run("users", "grant", "ann@example.com", "demo.reports.read")


def test_an_unknown_key_id_is_one_line_and_a_failure(cli: Cli) -> None:
    """An id that names no key: exit status 1 and one line on stderr, no traceback."""
    done = cli.run("policy", "explain", "--key-id", "apk_0000000000000000", "GET", "/x", ok=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["gateway: no key with id 'apk_0000000000000000'"]

"""The `gateway` command, run as a real subprocess: migrate, users, keys, policy check, and one
line on stderr (never a traceback) for every failure."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.keys import format as keyformat
from gateway.services import open_services
from gateway.settings import load_settings, with_secret

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
EXAMPLE = ROOT / "policies" / "example.yaml"
PASSWORD = "a good long password\n"
TIMEOUT = 120

Gateway = Callable[..., subprocess.CompletedProcess[str]]


def base_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The caller's environment without any GATEWAY_* setting, plus a development setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_MODE="development",
        GATEWAY_DATA_DIR=str(tmp_path / "var"),
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_POLICY=str(EXAMPLE),
    )
    return env


def runner(tmp_path: Path, env: dict[str, str]) -> Gateway:
    def run(
        *args: str, stdin: str | None = None, env_changes: dict[str, str | None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        run_env = dict(env)
        for key, value in (env_changes or {}).items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = value
        return subprocess.run(
            [PYTHON, "-m", "gateway", *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=run_env,
            cwd=tmp_path,
            timeout=TIMEOUT,
            check=False,
        )

    return run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path, f"sqlite:///{tmp_path / 'db'}")


@pytest.fixture
def gateway(tmp_path: Path, env: dict[str, str]) -> Gateway:
    return runner(tmp_path, env)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The one stderr line of a failed command, after checking its shape.

    The development-mode note about a newly created secret (a fresh data dir) may precede it.
    """
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [
        line
        for line in result.stderr.splitlines()
        if not line.startswith("development mode: created a hashing secret")
    ]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gateway: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def create_user(gateway: Gateway, email: str, *flags: str) -> str:
    return ok(gateway("users", "create", email, *flags, "--password-stdin", stdin=PASSWORD))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the happy paths ----------------------------------------------------------------------


def test_migrate_creates_the_secret_then_is_up_to_date(gateway: Gateway, tmp_path: Path) -> None:
    """The first migrate makes the development secret (noted on stderr) and migrates; the
    second does nothing."""
    made = gateway("migrate")
    first = ok(made)
    assert f"created a hashing secret in {tmp_path / 'var' / 'secret'}" in made.stderr
    assert "applied migrations [1" in first
    assert (tmp_path / "var" / "secret").is_file()
    second = ok(gateway("migrate"))
    assert second.strip() == "database is up to date"


def test_key_printed_alone_on_stdout_when_the_secret_is_created(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Even when `keys create` creates the development secret, stdout holds only the key,
    so `KEY=$(gateway keys create ...)` works (on a database with no secret recorded yet, as
    one from before secrets were fingerprinted: any other would refuse the new secret)."""
    create_user(gateway, "first@example.com", "--grant", "demo.reports.read")
    (tmp_path / "var" / "secret").unlink()
    with contextlib.closing(sqlite3.connect(tmp_path / "db")) as db, db:
        db.execute("DELETE FROM hashing_secrets")
    made = gateway(
        "keys", "create", "--user", "first@example.com", "--permission", "demo.reports.read"
    )
    out = ok(made)
    assert "created a hashing secret" in made.stderr
    keyformat.parse(out.strip(), "apk")


def test_users_create_list_grant_disable(gateway: Gateway) -> None:
    """Users are created (admin, service, with grants), listed with flags, granted, disabled."""
    assert "created admin admin@example.com" in create_user(gateway, "admin@example.com", "--admin")
    out = create_user(
        gateway,
        "bob@example.com",
        "--grant",
        "demo.reports.read",
        "--grant",
        "demo.store.canviewinvoices:S1",
    )
    assert "created user bob@example.com" in out
    robot = ok(gateway("users", "create", "robot@example.com", "--service"))
    assert "created service user robot@example.com" in robot
    granted = ok(gateway("users", "grant", "bob@example.com", "demo.legacy.access"))
    assert "demo.legacy.access" in granted
    assert ok(gateway("users", "disable", "bob@example.com")).strip() == "disabled bob@example.com"
    listing = ok(gateway("users", "list")).splitlines()
    assert len(listing) == 3
    by_email = {line.split()[1]: line for line in listing}
    assert "  admin  " in by_email["admin@example.com"]
    assert "  service  " in by_email["robot@example.com"]
    bob = by_email["bob@example.com"]
    assert "disabled" in bob
    assert "demo.reports.read demo.store.canviewinvoices:S1 demo.legacy.access" in bob
    assert "argon2" not in "\n".join(listing)


async def test_keys_create_list_revoke(gateway: Gateway, env: dict[str, str]) -> None:
    """A key is printed once on stdout (its id on stderr), verifies, and is listed only masked."""
    create_user(gateway, "bob@example.com", "--grant", "demo.reports.read")
    made = gateway(
        "keys",
        "create",
        "--user",
        "bob@example.com",
        "--label",
        "nightly reports",
        "--permission",
        "demo.reports.read",
        "--path",
        "/api/reports",
        "--expires",
        "30d",
    )
    text = ok(made).strip()
    assert "\n" not in text
    parsed = keyformat.parse(text, "apk")
    assert text not in made.stderr
    assert parsed.key_id in made.stderr
    assert keyformat.mask(parsed.key_id) in made.stderr
    assert "Traceback" not in made.stderr

    # The printed key works against the same database and secret.
    settings = with_secret(load_settings(None, environ=env), announce=print)
    async with open_services(settings) as s:
        verified = await s.verifier.verify(text)
        assert str(verified.path_rule) == "/api/reports"
        assert verified.expires_at is not None
        record = await s.store.get_key(verified.key_id)
        assert record is not None
        assert record.label == "nightly reports"

    listing = ok(gateway("keys", "list", "--user", "bob@example.com"))
    assert parsed.key_id in listing
    assert text not in listing
    assert text[len(parsed.key_id) :] not in listing  # no part of the secret either
    assert "active" in listing
    assert "path=/api/reports" in listing

    assert ok(gateway("keys", "disable", parsed.key_id)).strip() == f"disabled {parsed.key_id}"
    assert "  disabled  " in ok(gateway("keys", "list", "--user", "bob@example.com"))
    assert ok(gateway("keys", "enable", parsed.key_id)).strip() == f"enabled {parsed.key_id}"
    assert "  active  " in ok(gateway("keys", "list", "--user", "bob@example.com"))
    assert ok(gateway("keys", "revoke", parsed.key_id)).strip() == f"revoked {parsed.key_id}"
    assert ok(gateway("keys", "list", "--user", "bob@example.com")) == ""
    fails(gateway("keys", "revoke", parsed.key_id), "not found")


def test_policy_check_good_files(gateway: Gateway) -> None:
    """policy check accepts the shipped policies, given or from the settings."""
    out = ok(gateway("policy", "check"))
    assert out.startswith("ok: ")
    assert str(EXAMPLE) in out
    files = [str(ROOT / "policies" / n) for n in ("example.yaml", "btcpay-greenfield.yaml")]
    assert ok(gateway("policy", "check", *files)).startswith("ok: ")


def test_policy_check_uses_no_database_or_secret(tmp_path: Path) -> None:
    """policy check works in production mode with no secret and no reachable database."""
    env = base_env(tmp_path, f"postgresql://postgres@127.0.0.1:{closed_port()}/x")
    env["GATEWAY_MODE"] = "production"
    assert ok(runner(tmp_path, env)("policy", "check")).startswith("ok: ")
    assert not (tmp_path / "var").exists()


BROKEN_POLICIES = {
    "unknown-permission": (
        """
        upstreams: {shop: {url: "http://127.0.0.1:9000"}}
        routes:
          - {path: /api/**, upstream: shop, permission: shop.nothing}
        """,
        ["routes[0]", "shop.nothing"],
    ),
    "cycle": (
        """
        permissions:
          - {name: a.one, title: A, implies: [a.two]}
          - {name: a.two, title: B, implies: [a.one]}
        """,
        ["cycle"],
    ),
    "bad-yaml": ("permissions: [\n", ["YAML"]),
    "unknown-key": (
        """
        permissions:
          - {name: a.one, title: A, colour: red}
        """,
        ["permissions[0]", "colour"],
    ),
    "duplicate-permission": (
        """
        permissions:
          - {name: a.one, title: A}
          - {name: a.one, title: A again}
        """,
        ["a.one"],
    ),
    "bad-upstream": (
        """
        upstreams: {shop: {url: "ftp://127.0.0.1/x"}}
        """,
        ["shop"],
    ),
    "unknown-upstream": (
        """
        permissions: [{name: a.one, title: A}]
        routes:
          - {path: /api/**, upstream: nowhere, permission: a.one}
        """,
        ["routes[0]", "nowhere"],
    ),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_POLICIES))
def test_policy_check_broken_file(gateway: Gateway, tmp_path: Path, kind: str) -> None:
    """A broken policy exits 1 with one line naming the file, the entry and the problem."""
    text, fragments = BROKEN_POLICIES[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    result = gateway("policy", "check", str(path))
    assert result.returncode == 1
    fails(result, str(path), *fragments)


def test_policy_check_missing_file(gateway: Gateway, tmp_path: Path) -> None:
    """A policy file that does not exist exits 1 naming it."""
    missing = str(tmp_path / "absent.yaml")
    fails(gateway("policy", "check", missing), missing)


# ---- failures: one line, no traceback -------------------------------------------------------


def test_duplicate_email(gateway: Gateway) -> None:
    """Creating a user twice (in any case) fails with one line."""
    create_user(gateway, "bob@example.com")
    fails(
        gateway("users", "create", "BOB@example.com", "--password-stdin", stdin=PASSWORD),
        "already exists",
    )


@pytest.mark.parametrize(
    "args",
    [
        ("users", "disable", "nobody@example.com"),
        ("users", "grant", "nobody@example.com", "demo.reports.read"),
        ("keys", "create", "--user", "nobody@example.com"),
        ("keys", "list", "--user", "nobody@example.com"),
    ],
)
def test_unknown_user(gateway: Gateway, args: tuple[str, ...]) -> None:
    """Naming a user who does not exist fails with one line."""
    fails(gateway(*args), "user not found")


def test_unknown_permission(gateway: Gateway) -> None:
    """A permission the catalog lacks is refused on users create, users grant and keys create."""
    fails(
        gateway(
            "users",
            "create",
            "bob@example.com",
            "--grant",
            "demo.nope",
            "--password-stdin",
            stdin=PASSWORD,
        ),
        "grants[0]",
        "demo.nope",
    )
    create_user(gateway, "bob@example.com")
    fails(gateway("users", "grant", "bob@example.com", "demo.nope"), "grants[0]", "demo.nope")
    fails(
        gateway("keys", "create", "--user", "bob@example.com", "--permission", "demo.nope"),
        "permissions[0]",
        "demo.nope",
    )


def test_key_beyond_its_owner(gateway: Gateway) -> None:
    """A key with a permission its owner lacks fails with one line naming it."""
    create_user(gateway, "bob@example.com", "--grant", "demo.store.canviewinvoices:S1")
    fails(
        gateway(
            "keys",
            "create",
            "--user",
            "bob@example.com",
            "--permission",
            "demo.store.canviewinvoices:S2",
        ),
        "demo.store.canviewinvoices:S2",
    )


def test_keys_for_a_disabled_user(gateway: Gateway) -> None:
    """No key can be minted for a disabled user."""
    create_user(gateway, "bob@example.com", "--grant", "demo.reports.read")
    ok(gateway("users", "disable", "bob@example.com"))
    fails(
        gateway("keys", "create", "--user", "bob@example.com", "--permission", "demo.reports.read"),
        "disabled",
    )


@pytest.mark.parametrize("rule", ["/a/../b", "a/x", "=", "/a%2Fb"])
def test_bad_path_rule(gateway: Gateway, rule: str) -> None:
    """A path restriction that is not canonical fails with one line naming `path`."""
    create_user(gateway, "bob@example.com", "--grant", "demo.reports.read")
    fails(
        gateway(
            "keys",
            "create",
            "--user",
            "bob@example.com",
            "--permission",
            "demo.reports.read",
            f"--path={rule}",
        ),
        "path",
    )


@pytest.mark.parametrize("lifetime", ["3x", "-1d", "d", "999999w", "1.5d"])
def test_bad_expires(gateway: Gateway, lifetime: str) -> None:
    """A lifetime that is not a duration (or is too long) fails with one line naming --expires."""
    create_user(gateway, "bob@example.com", "--grant", "demo.reports.read")
    fails(
        gateway(
            "keys",
            "create",
            "--user",
            "bob@example.com",
            "--permission",
            "demo.reports.read",
            f"--expires={lifetime}",
        ),
        "--expires",
        lifetime,
    )


@pytest.mark.parametrize("action", ["revoke", "disable", "enable"])
def test_unknown_key_id(gateway: Gateway, action: str) -> None:
    """Acting on a key id that does not exist fails with one line."""
    ok(gateway("migrate"))
    fails(gateway("keys", action, "apk_0000000000000000"), "API key not found")
    fails(gateway("keys", action, "not-a-key-id"), "API key not found")


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_unreachable_database(gateway: Gateway, kind: str) -> None:
    """A database that does not answer fails with one line starting `gateway: database:`."""
    url = (
        f"postgresql://postgres@127.0.0.1:{closed_port()}/keygate"
        if kind == "postgres"
        else "sqlite:////proc/keygate-cli-test.db"
    )
    for args in (("migrate",), ("users", "list")):
        fails(gateway(*args, env_changes={"GATEWAY_DATABASE_URL": url}), "gateway: database:")


def test_production_without_secret(gateway: Gateway, tmp_path: Path) -> None:
    """Production mode with no secret refuses to run, naming GATEWAY_SECRET, and creates nothing."""
    fails(gateway("migrate", env_changes={"GATEWAY_MODE": "production"}), "GATEWAY_SECRET")
    assert not (tmp_path / "var").exists()


def test_missing_config_file(gateway: Gateway, tmp_path: Path) -> None:
    """A config file that cannot be read fails with one line naming it."""
    missing = str(tmp_path / "absent.yaml")
    fails(gateway("--config", missing, "users", "list"), missing)
    fails(gateway("users", "list", env_changes={"GATEWAY_CONFIG": missing}), missing)


def test_bad_yaml_config(gateway: Gateway, tmp_path: Path) -> None:
    """A config file that is not YAML, or has an unknown or bad setting, fails with one line."""
    config = tmp_path / "keygate.yaml"
    config.write_text("listen: [127.0.0.1\n")
    fails(gateway("--config", str(config), "users", "list"), str(config), "YAML")
    config.write_text("listen: 127.0.0.1:8080\nlisten_port: 9\n")
    fails(gateway("--config", str(config), "users", "list"), "unknown setting 'listen_port'")
    config.write_text("workers: none\n")
    fails(gateway("--config", str(config), "users", "list"), "workers", "none")


def test_bad_environment_setting(gateway: Gateway) -> None:
    """A bad GATEWAY_* value fails with one line naming the variable and the value."""
    fails(gateway("users", "list", env_changes={"GATEWAY_LISTEN": "abc"}), "GATEWAY_LISTEN", "abc")
    fails(
        gateway("migrate", env_changes={"GATEWAY_DATABASE_URL": "mysql://x"}),
        "GATEWAY_DATABASE_URL",
        "mysql://x",
    )


def test_empty_password_on_stdin(gateway: Gateway) -> None:
    """--password-stdin with nothing (or an empty line) on stdin fails with one line."""
    fails(
        gateway("users", "create", "bob@example.com", "--password-stdin", stdin=""),
        "no password",
    )
    fails(
        gateway("users", "create", "bob@example.com", "--password-stdin", stdin="\n"),
        "no password",
    )
    assert ok(gateway("users", "list")) == ""


def test_short_password_on_stdin(gateway: Gateway) -> None:
    """A password that is too short fails with one line, and no user is created."""
    fails(
        gateway("users", "create", "bob@example.com", "--password-stdin", stdin="short\n"),
        "password",
    )
    assert ok(gateway("users", "list")) == ""


def test_no_password_and_no_terminal(gateway: Gateway) -> None:
    """Without --password-stdin and without a terminal to ask on, the command fails clearly."""
    fails(gateway("users", "create", "bob@example.com"), "--password-stdin")


# A command-line argument that is not UTF-8: Python keeps the bytes as lone surrogates.
NOT_UTF8 = b"bob\xed\xa0\x80@example.com".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("users", "create", NOT_UTF8, "--service"), "email"),
        (("users", "grant", "bob@example.com", "demo.reports.read", NOT_UTF8), "permissions"),
        (("keys", "create", "--user", "bob@example.com", "--label", NOT_UTF8), "label"),
        (("keys", "revoke", NOT_UTF8), "key-id"),
    ],
)
def test_arguments_that_are_not_utf8_fail_with_one_line(
    gateway: Gateway, args: tuple[str, ...], named: str
) -> None:
    """Text arguments that are not UTF-8 are refused by name before the database is used."""
    ok(gateway("users", "create", "bob@example.com", "--service"))
    result = gateway(*args)
    fails(result, named)
    assert "not valid UTF-8" in result.stderr
    assert "bob@example.com" in ok(gateway("users", "list"))
    assert ok(gateway("keys", "list", "--user", "bob@example.com")) == ""


def test_password_on_stdin_that_is_not_utf8(tmp_path: Path, env: dict[str, str]) -> None:
    """A password whose bytes are not UTF-8 fails with one line, whatever the locale's
    error handler, and no user is created."""
    for locale in ("C.UTF-8", "C"):
        result = subprocess.run(
            [PYTHON, "-m", "gateway", "users", "create", "bob@example.com", "--password-stdin"],
            input=b"a good long \xed\xa0\x80 password\n",
            capture_output=True,
            env={**env, "LC_ALL": locale},
            cwd=tmp_path,
            timeout=TIMEOUT,
            check=False,
        )
        stderr = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 1, stderr
        fails(subprocess.CompletedProcess(result.args, 1, "", stderr), "not valid UTF-8")
    listing = subprocess.run(
        [PYTHON, "-m", "gateway", "users", "list"],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=TIMEOUT,
        check=True,
    )
    assert listing.stdout == b""


@pytest.mark.parametrize(
    "args", [("keys",), ("users", "create"), ("keys", "create"), ("nonsense",), ()]
)
def test_usage_errors(gateway: Gateway, args: tuple[str, ...]) -> None:
    """Bad command lines exit 2 with one line, not a usage dump."""
    result = gateway(*args)
    assert result.returncode == 2
    fails(result, "see --help")


# ---- PostgreSQL -----------------------------------------------------------------------------


async def test_cli_on_postgres(tmp_path: Path, pg_url: str) -> None:
    """The same commands work against a fresh PostgreSQL database."""
    env = base_env(tmp_path, pg_url)
    gateway = runner(tmp_path, env)
    assert "applied migrations [1" in ok(gateway("migrate"))
    create_user(gateway, "bob@example.com", "--grant", "demo.reports.read")
    text = ok(
        gateway(
            "keys",
            "create",
            "--user",
            "bob@example.com",
            "--permission",
            "demo.reports.read",
            "--expires",
            "2w",
        )
    ).strip()
    key_id = keyformat.parse(text, "apk").key_id
    assert key_id in ok(gateway("keys", "list", "--user", "bob@example.com"))
    fails(
        gateway("users", "create", "Bob@Example.com", "--password-stdin", stdin=PASSWORD),
        "already exists",
    )
    settings = with_secret(load_settings(None, environ=env), announce=print)
    async with open_services(settings) as s:
        assert (await s.verifier.verify(text)).key_id == key_id
    ok(gateway("keys", "revoke", key_id))
    assert ok(gateway("keys", "list", "--user", "bob@example.com")) == ""


def test_resources_set_list_rename_delete(gateway: Gateway) -> None:
    """`resources set` registers and renames, `list` shows (by type too), `delete` forgets."""
    assert ok(gateway("resources", "set", "store", "S1", "Main shop")).strip() == (
        "store S1 is named 'Main shop'"
    )
    ok(gateway("resources", "set", "store", "S2", "Second"))
    ok(gateway("resources", "set", "store", "S1", "  Flagship  "))
    assert ok(gateway("resources", "list")).splitlines() == [
        "store  S1  Flagship",
        "store  S2  Second",
    ]
    assert ok(gateway("resources", "list", "--type", "store")).count("store") == 2
    assert ok(gateway("resources", "delete", "store", "S2")).strip() == "forgot store S2"
    assert ok(gateway("resources", "list")).splitlines() == ["store  S1  Flagship"]
    fails(gateway("resources", "delete", "store", "S2"), "no store S2 is registered")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("set", "shelf", "S1", "x"), "unknown resource type (known: store)"),
        (("set", "store", "S 1", "x"), "id: must be 1-128"),
        (("set", "store", "S1", "   "), "name: must be a non-empty string"),
        (("set", "store", "S1", "a\tb"), "printable"),
        (("list", "--type", "shelf"), "unknown resource type"),
        (("delete", "store", "a/b"), "id: must be"),
    ],
)
def test_resources_bad_input_is_one_line(
    gateway: Gateway, args: tuple[str, ...], fragment: str
) -> None:
    """Bad types, ids and names are refused with one line and a non-zero exit."""
    fails(gateway("resources", *args), fragment)


def test_policy_check_warns_about_routes_the_gateway_shadows(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Routes under the gateway's own paths pass, with one warning each naming the path;
    with admin_listen set, the admin paths no longer shadow anything."""
    policy = tmp_path / "shadowed.yaml"
    policy.write_text(
        textwrap.dedent(
            """
            upstreams: {shop: {url: "http://127.0.0.1:9000"}}
            routes:
              - {path: /docs, upstream: shop, auth: none}
              - {path: /metrics, upstream: shop, auth: none}
              - {path: "/v1/{any}/**", upstream: shop, auth: none}
              - {path: /login, upstream: shop, auth: none}
              - {path: /shop/**, upstream: shop, auth: none}
            """
        )
    )
    result = gateway("policy", "check", str(policy))
    assert ok(result).startswith("ok: ")
    warnings = result.stderr.splitlines()
    assert len(warnings) == 4, result.stderr
    assert all(w.startswith("warning: route ") for w in warnings)
    assert "route /docs (" in warnings[0]
    assert "own /docs" in warnings[0]
    assert "own /metrics" in warnings[1]
    assert "own /v1/admin/" in warnings[2]  # the first few of the gateway's /v1 paths
    assert "more: those requests never reach the upstream" in warnings[2]
    assert "own /login" in warnings[3]
    split = gateway(
        "policy", "check", str(policy), env_changes={"GATEWAY_ADMIN_LISTEN": "127.0.0.1:9091"}
    )
    warnings = split.stderr.splitlines()
    assert [w.split(" (")[0] for w in warnings] == [
        "warning: route /v1/{any}/**",
        "warning: route /login",
    ]
    assert "/v1/admin" not in warnings[0]

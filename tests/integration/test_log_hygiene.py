"""At DEBUG, with the access log on, a whole key life cycle leaves no password, password hash,
key, key hash or secret in anything `gateway serve` or the CLI writes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from gateway.keys.hashing import KeyHasher
from gateway.sessions import COOKIE
from tests.e2e.support import form
from tests.integration.test_cli import PYTHON, TIMEOUT
from tests.integration.test_serve import EXAMPLE, Server, client, free_port, stop, wait_healthy
from tests.integration.upstream import EchoUpstream

PASSWORD = "a long and secret password"
EMAIL = "alice@example.com"
KEY_RE = re.compile(r"apk_[0-9A-Za-z]{54}")


def _policy(tmp_path: Path, upstream_url: str) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:8081", upstream_url))
    return policy


@contextmanager
def _serving(workdir: Path, env: dict[str, str]) -> Iterator[Server]:
    """`python -m gateway serve` with exactly `env`, its output kept in files."""
    port = free_port()
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            [PYTHON, "-m", "gateway", "serve"],
            cwd=workdir,
            env={**env, "GATEWAY_LISTEN": f"127.0.0.1:{port}"},
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", out, err)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


def _forms_of(value: bytes) -> list[str]:
    """Every way a logged hash could read: hex (either case), base64, the bytes' repr."""
    return [
        value.hex(),
        value.hex().upper(),
        base64.b64encode(value).decode(),
        base64.urlsafe_b64encode(value).decode().rstrip("="),
        repr(value)[2:-1],
    ]


async def _stored_hashes(database_url: str) -> tuple[list[str], list[bytes]]:
    """The password hashes and key hashes exactly as the database holds them."""
    users = "SELECT password_hash FROM users WHERE password_hash IS NOT NULL"
    keys = "SELECT key_hash FROM api_keys"
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            passwords = [row[0] for row in db.execute(users)]
            hashes = [bytes(row[0]) for row in db.execute(keys)]
        return passwords, hashes
    conn = await asyncpg.connect(database_url)
    try:
        passwords = [row[0] for row in await conn.fetch(users)]
        hashes = [bytes(row[0]) for row in await conn.fetch(keys)]
    finally:
        await conn.close()
    return passwords, hashes


async def _key_life_cycle(base: str) -> tuple[list[str], str]:
    """Log in, create keys on the page and on Greenfield, use them, revoke one; the keys and
    the session cookie."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies from 127.0.0.1
    async with aiohttp.ClientSession(base, cookie_jar=jar) as web:
        # The password typed into the email field: a failed login, logged without either.
        login = form(await (await web.get("/login")).text(), "/login")
        async with web.post(
            "/login", data=login.data(email=PASSWORD, password=EMAIL), allow_redirects=False
        ) as response:
            assert response.status != 303
        login = form(await (await web.get("/login")).text(), "/login")
        async with web.post(
            "/login", data=login.data(email=EMAIL, password=PASSWORD), allow_redirects=False
        ) as response:
            assert response.status == 303, await response.text()
        new = form(await (await web.get("/account/api-keys/new")).text(), "/account/api-keys")
        async with web.post(
            "/account/api-keys", data=new.data(label="page key", permission="demo.reports.read")
        ) as response:
            assert response.status == 201, await response.text()
            found = KEY_RE.search(await response.text())
            assert found is not None
            page_key = found.group(0)
        cookie = next(c.value for c in jar if c.key == COOKIE)

        basic = base64.b64encode(f"{EMAIL}:{PASSWORD}".encode()).decode()
        async with web.post(
            "/api/v1/api-keys",
            json={"label": "api key", "permissions": ["unrestricted"]},
            headers={"Authorization": f"Basic {basic}"},
        ) as response:
            assert response.status == 200, await response.text()
            api_key = (await response.json())["apiKey"]

        for key in (page_key, api_key):
            async with web.get("/api/reports/daily", headers={"X-API-KEY": key}) as response:
                assert response.status == 200, await response.text()
        # A client that puts a key in the query: the access log must not keep it.
        async with web.get(
            f"/public/x?apikey={api_key}", headers={"Authorization": f"token {api_key}"}
        ) as response:
            assert response.status == 200
        # Greenfield takes the whole key in the path (revoking another key needs
        # `unrestricted`); so does the access log line.
        async with web.delete(
            f"/api/v1/api-keys/{page_key}", headers={"Authorization": f"token {api_key}"}
        ) as response:
            assert response.status == 200, await response.text()
        async with web.get("/api/reports/daily", headers={"X-API-KEY": page_key}) as response:
            assert response.status == 401
    return [page_key, api_key], cookie


@pytest.fixture(
    params=[("sqlite", "true", "text"), ("postgres", "false", "text"), ("sqlite", "true", "json")],
    ids=["sqlite-fast-front", "postgres-redis-aiohttp", "sqlite-fast-front-json"],
)
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Settings of a store (and data plane, and log format): SQLite with the fast front;
    PostgreSQL and Redis with aiohttp's data plane; SQLite with JSON logs."""
    backend, fast_data_plane, log_format = request.param
    settings = {"GATEWAY_FAST_DATA_PLANE": fast_data_plane, "GATEWAY_LOG_FORMAT": log_format}
    if backend == "sqlite":
        settings["GATEWAY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'keygate.db'}"
    else:
        settings["GATEWAY_DATABASE_URL"] = str(request.getfixturevalue("pg_url"))
        settings["GATEWAY_REDIS_URL"] = str(request.getfixturevalue("redis_url"))
    return settings


async def test_debug_logs_hold_no_secret(tmp_path: Path, deployment: dict[str, str]) -> None:
    """Nothing secret is logged at DEBUG on either store (and either data plane)."""
    secret = secrets.token_urlsafe(48)
    settings = {
        **deployment,
        "GATEWAY_LOG_LEVEL": "DEBUG",
        "GATEWAY_ACCESS_LOG": "true",
        "GATEWAY_SECRET": secret,
        "GATEWAY_DATA_DIR": str(tmp_path / "var"),
    }
    database_url = settings["GATEWAY_DATABASE_URL"]

    async with EchoUpstream() as upstream:
        settings["GATEWAY_POLICY"] = str(_policy(tmp_path, upstream.url))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(settings, GATEWAY_MODE="development")
        cli = await asyncio.to_thread(
            subprocess.run,
            [PYTHON, "-m", "gateway", "users", "create", EMAIL, "--password-stdin", "--admin"],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=TIMEOUT,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        with _serving(tmp_path, env) as server:
            async with client() as session:
                await wait_healthy(server, session)
            keys, cookie = await _key_life_cycle(server.base)
            assert await stop(server) == 0
            logged = "\n".join([cli.stdout, cli.stderr, server.stdout(), server.stderr()])
            if settings["GATEWAY_LOG_FORMAT"] == "json":  # every line of the log is one object
                lines = server.stderr().splitlines()
                assert lines
                assert all(isinstance(json.loads(line), dict) for line in lines)

    passwords, key_hashes = await _stored_hashes(database_url)
    assert len(passwords) == 1
    assert len(key_hashes) == 1  # the page key was revoked
    hasher = KeyHasher(secret.encode())
    hashes = {hasher.digest(key) for key in keys} | set(key_hashes)
    # DEBUG really was on, and the access log too: the test looks at real output.
    assert (" DEBUG " if deployment["GATEWAY_LOG_FORMAT"] == "text" else '"DEBUG"') in logged
    assert "/api/reports/daily" in logged
    # The security events were logged (by ids and addresses only).
    assert "failed password check from 127.0.0.1" in logged
    assert "key.revoke " in logged
    forbidden = {
        "the password": [PASSWORD],
        "the password hash": passwords + [p.split("$")[-1] for p in passwords],
        "a key": keys,
        "a key's secret part": [key[len("apk_") + 16 :] for key in keys],
        "a key hash": [form for value in hashes for form in _forms_of(value)],
        "the hashing secret": [secret],
        "the session cookie": [cookie],
    }
    for what, values in forbidden.items():
        for value in values:
            assert value not in logged, f"{what} appears in the logs"

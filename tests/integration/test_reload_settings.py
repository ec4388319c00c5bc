"""A reload re-reads the settings too: `log_level` and `access_log` change in the master and
every worker of a real `gateway serve --workers 2` on SIGHUP; a broken settings file changes
nothing; any other changed setting is named as needing a restart. And the master's count of
worker restarts is on /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.integration.faults import run_cli
from tests.integration.serving import client, environment, get, policy_text, serve
from tests.integration.upstream import EchoUpstream

WAIT_SECONDS = 20.0
QUIET_SECONDS = 0.5  # how long a line that must not come is waited for


async def _until(check: Callable[[], bool], what: Callable[[], str]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; stderr:\n{what()}")
        await asyncio.sleep(0.05)


def _write(config: Path, text: str) -> None:
    """As an editor saves: whole (a reload never reads a half-written file)."""
    partial = config.with_suffix(".tmp")
    partial.write_text(text)
    partial.replace(config)


async def _requests(base: str, path: str, count: int = 6) -> None:
    """`count` requests, each on a new connection so the kernel may give it to any worker."""
    for _ in range(count):
        async with aiohttp.ClientSession() as fresh:
            assert await get(fresh, f"{base}{path}") == 200


@pytest.mark.parametrize("fast", ["true", "false"], ids=["fast-front", "aiohttp"])
async def test_sighup_rereads_log_level_and_access_log_and_keeps_them_on_a_broken_file(
    tmp_path: Path, fast: str
) -> None:
    config = tmp_path / "keygate.yaml"
    config.write_text("log_level: WARNING\naccess_log: false\n")
    policy = tmp_path / "policy.yaml"
    async with EchoUpstream() as upstream:
        policy.write_text(policy_text(upstream.url))
        env = environment(
            tmp_path, policy, GATEWAY_CONFIG=str(config), GATEWAY_FAST_DATA_PLANE=fast
        )
        with serve(env, tmp_path, "--workers", "2") as gw:
            await gw.wait_serving(workers=2)
            master = gw.proc.pid

            # At start: WARNING, no access log. A reload's INFO lines and access lines stay out.
            os.kill(master, signal.SIGHUP)
            await _requests(gw.base, "/public/before")
            await asyncio.sleep(QUIET_SECONDS)
            assert "/public/before" not in gw.stderr()
            assert "policy reload: unchanged" not in gw.stderr()

            _write(config, "log_level: INFO\naccess_log: true\n")
            os.kill(master, signal.SIGHUP)
            line = "settings reloaded: access_log=True, log_level=INFO"
            await _until(lambda: gw.stderr().count(line) == 3, gw.stderr)  # master + 2 workers
            await _requests(gw.base, "/public/after")
            await _until(lambda: "GET /public/after" in gw.stderr(), gw.stderr)
            # INFO now: each worker says it kept the policy, at this reload and the next.
            await _until(lambda: gw.stderr().count("policy reload: unchanged") == 2, gw.stderr)
            os.kill(master, signal.SIGHUP)
            await _until(lambda: gw.stderr().count("policy reload: unchanged") == 4, gw.stderr)

            # A broken file: one line, the running settings stay (access lines keep coming).
            _write(config, "log_level: LOUD\naccess_log: false\n")
            os.kill(master, signal.SIGHUP)
            await _until(lambda: "reload refused" in gw.stderr(), gw.stderr)
            refused = [ln for ln in gw.stderr().splitlines() if "reload refused" in ln]
            assert len(refused) == 1
            assert "log_level" in refused[0]
            await _requests(gw.base, "/public/kept")
            await _until(lambda: "GET /public/kept" in gw.stderr(), gw.stderr)

            # A setting that cannot change while serving: named once, the others apply.
            _write(config, "log_level: INFO\naccess_log: false\nshutdown_timeout: 7\n")
            os.kill(master, signal.SIGHUP)
            await _until(lambda: gw.stderr().count("access_log=False") == 3, gw.stderr)
            restart = [ln for ln in gw.stderr().splitlines() if "need a restart" in ln]
            assert len(restart) == 1
            assert restart[0].endswith("need a restart to apply: shutdown_timeout")
            await _requests(gw.base, "/public/quiet")
            await asyncio.sleep(QUIET_SECONDS)
            assert "/public/quiet" not in gw.stderr()

            assert "Traceback" not in gw.stderr()
            assert gw.proc.poll() is None


async def test_the_admin_reload_endpoint_rereads_the_settings(tmp_path: Path) -> None:
    """POST /v1/admin/policy/reload asks the master, which reads the settings again."""
    config = tmp_path / "keygate.yaml"
    config.write_text("log_level: INFO\naccess_log: false\n")
    policy = tmp_path / "policy.yaml"
    async with EchoUpstream() as upstream:
        policy.write_text(policy_text(upstream.url))
        env = environment(tmp_path, policy, GATEWAY_CONFIG=str(config))
        for command in (
            ("migrate",),
            ("users", "create", "ops@example.com", "--service", "--admin"),
            ("keys", "create", "--user", "ops@example.com", "--permission", "unrestricted"),
        ):
            code, out, err = await run_cli(env, *command, seconds=60)
            assert code == 0, err
        admin = out.strip()
        with serve(env, tmp_path, "--workers", "2") as gw:
            await gw.wait_serving(workers=2)
            _write(config, "log_level: INFO\naccess_log: true\n")
            async with (
                client() as session,
                session.post(
                    f"{gw.base}/v1/admin/policy/reload", headers={"X-API-KEY": admin}
                ) as response,
            ):
                assert response.status == 200
            await _until(lambda: gw.stderr().count("access_log=True") == 3, gw.stderr)
            await _requests(gw.base, "/public/logged")
            await _until(lambda: "GET /public/logged" in gw.stderr(), gw.stderr)


def _restarts(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("keygate_worker_restarts_total "):
            return float(line.split()[1])
    raise AssertionError(f"no keygate_worker_restarts_total in:\n{text}")


async def test_worker_restarts_are_counted_on_metrics(tmp_path: Path) -> None:
    """kill -9 of one of two workers: once it is started again, every scrape (whichever
    worker answers) says 1."""
    policy = tmp_path / "policy.yaml"
    async with EchoUpstream() as upstream:
        policy.write_text(policy_text(upstream.url))
        env = environment(tmp_path, policy)
        with serve(env, tmp_path, "--workers", "2") as gw:
            await gw.wait_serving(workers=2)
            async with client() as session, session.get(f"{gw.base}/metrics") as response:
                assert response.status == 200
                assert _restarts(await response.text()) == 0
            victim = gw.workers()[0]
            os.kill(victim, signal.SIGKILL)
            await _until(
                lambda: "serves again" in gw.stderr() and len(gw.workers()) == 2, gw.stderr
            )
            seen = []
            deadline = time.monotonic() + WAIT_SECONDS
            while len(seen) < 6 and time.monotonic() < deadline:
                async with (
                    aiohttp.ClientSession() as fresh,
                    fresh.get(f"{gw.base}/metrics") as response,
                ):
                    value = _restarts(await response.text())
                if value or seen:  # the new worker hears the count just after it serves
                    seen.append(value)
                await asyncio.sleep(0.05)
            assert seen == [1.0] * 6

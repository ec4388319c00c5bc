"""Hot reload of the policy in a real `gateway serve --workers 2`: SIGHUP to the master and
`POST /v1/admin/policy/reload`, with a valid and with a broken policy, under load."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.integration.faults import run_cli
from tests.integration.serving import Served, client, environment, get, policy_text, serve
from tests.integration.upstream import EchoUpstream

NEW_ROUTE = "  - {path: /new/**, upstream: main, auth: none}"
SLOW_ROUTE = "  - {path: /slow/**, upstream: main, auth: none}"
BROKEN = "routes: [\n"


async def _fresh(url: str) -> int:
    """One request on a new connection, so the kernel may hand it to either worker."""
    async with client() as session:
        return await get(session, url)


async def _answered_everywhere(url: str, status: int, tries: int = 20) -> bool:
    """`tries` fresh connections in a row all answered `status` (both workers, in practice)."""
    return all([await _fresh(url) == status for _ in range(tries)])


async def _until(url: str, status: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not await _answered_everywhere(url, status):
        assert time.monotonic() < deadline, f"{url} never answered {status} everywhere"
        await asyncio.sleep(0.1)


async def _digest(gw: Served) -> str:
    async with client() as session, session.get(f"{gw.base}/readyz") as response:
        body = await response.json()
        return str(body["policy"]["sha256"])


@contextlib.asynccontextmanager
async def _load(url: str, concurrency: int = 4) -> AsyncIterator[list[int]]:
    """Requests on fresh connections from `concurrency` tasks until the block ends: every
    status seen (0: no answer)."""
    statuses: list[int] = []

    async def one() -> None:
        while True:
            try:
                statuses.append(await _fresh(url))
            except (aiohttp.ClientError, TimeoutError):
                statuses.append(0)

    tasks = [asyncio.create_task(one()) for _ in range(concurrency)]
    try:
        yield statuses
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_sighup_reloads_every_worker_and_keeps_the_last_good_policy(tmp_path: Path) -> None:
    """Under load: SIGHUP with a new route makes it answer in every worker while the slow
    request in flight finishes under the policy it started with (its route is gone); SIGHUP
    with a broken file logs one line and keeps that policy. No request of the load fails."""
    arrived = asyncio.Event()

    async def slow(_request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(1.5)
        return web.Response(text="finished")

    upstream = EchoUpstream()
    upstream.route("GET", "/slow/x", slow)
    async with upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_text(upstream.url, SLOW_ROUTE))
        with serve(environment(tmp_path, policy), tmp_path, "--workers", "2") as gw:
            await gw.wait_serving(workers=2)
            assert await _answered_everywhere(f"{gw.base}/new/x", 404)
            first = await _digest(gw)
            async with _load(f"{gw.base}/public/load") as statuses, client() as session:
                in_flight = asyncio.create_task(get(session, f"{gw.base}/slow/x"))
                await asyncio.wait_for(arrived.wait(), 10)
                policy.write_text(policy_text(upstream.url, NEW_ROUTE))
                gw.proc.send_signal(signal.SIGHUP)
                await _until(f"{gw.base}/new/x", 200)
                assert await in_flight == 200
                assert await _answered_everywhere(f"{gw.base}/slow/x", 404)
                second = await _digest(gw)
                assert second != first

                policy.write_text(BROKEN)
                gw.proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while "policy reload refused" not in gw.stderr():
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
                assert await _answered_everywhere(f"{gw.base}/new/x", 200)
                assert await _digest(gw) == second
            assert statuses
            assert set(statuses) == {200}
            assert gw.proc.poll() is None
            err = gw.stderr()
            errors = [line for line in err.splitlines() if " ERROR " in line]
            assert len(errors) == 1
            assert "policy.yaml" in errors[0]
            assert err.count("policy reloaded:") == 2  # once per worker
            assert "Traceback" not in err


async def _key(env: dict[str, str], email: str, *flags: str, permission: str) -> str:
    code, _, err = await run_cli(env, "users", "create", email, "--service", *flags, seconds=60)
    assert code == 0, err
    code, out, err = await run_cli(
        env, "keys", "create", "--user", email, "--permission", permission, seconds=60
    )
    assert code == 0, err
    return out.strip()


async def test_the_admin_endpoint_reloads_every_worker(tmp_path: Path) -> None:
    """POST /v1/admin/policy/reload: 401 without a key, 403 for a non-administrator, a 409
    problem naming the broken file (the policy stays), then 200 and the new route answers in
    both workers."""
    async with EchoUpstream() as upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_text(upstream.url))
        env = environment(tmp_path, policy)
        code, _, err = await run_cli(env, "migrate", seconds=60)
        assert code == 0, err
        admin = await _key(env, "ops@example.com", "--admin", permission="unrestricted")
        reader = await _key(env, "reader@example.com", "--grant", "t.read", permission="t.read")
        with serve(env, tmp_path, "--workers", "2") as gw:
            await gw.wait_serving(workers=2)
            url = f"{gw.base}/v1/admin/policy/reload"
            first = await _digest(gw)
            async with client() as session:
                async with session.post(url) as response:
                    assert response.status == 401
                async with session.post(url, headers={"X-API-KEY": reader}) as response:
                    assert response.status == 403
                    assert response.content_type == "application/problem+json"

                policy.write_text(policy_text(upstream.url) + "  - {path: /x, upstream: gone}\n")
                async with session.post(url, headers={"X-API-KEY": admin}) as response:
                    assert response.status == 409
                    assert response.content_type == "application/problem+json"
                    problem = await response.json()
                    assert problem["code"] == "policy-invalid"
                    assert "gone" in problem["detail"]
                assert await _digest(gw) == first
                assert await _answered_everywhere(f"{gw.base}/new/x", 404)

                policy.write_text(policy_text(upstream.url, NEW_ROUTE))
                async with session.post(url, headers={"X-API-KEY": admin}) as response:
                    assert response.status == 200
                    body = await response.json()
            assert body["changed"] is True
            assert body["workers"] == "all"
            assert body["policy"]["sha256"] != first
            await _until(f"{gw.base}/new/x", 200)
            assert await _digest(gw) == body["policy"]["sha256"]
            assert "Traceback" not in gw.stderr()

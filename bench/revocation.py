"""Revocation delay across instances: `python -m bench.revocation`.

Two real gateway processes (A and B) share a fresh PostgreSQL database and Redis. For each of
`--count` keys (default 200): B serves the key once (so B has it cached in process, with a
600 s in-process TTL: only an invalidation notice can make B refuse it), a prober then sends
requests with the key to B back to back, and the key is revoked through instance A (the key
revokes itself: `DELETE /api/v1/api-keys/current`; or with `--via store`, the store change +
Redis publish that `gateway keys revoke` runs). The delay is the time from sending the revoke
to the first 401 B returns. Its resolution is one probe round trip (also reported).

`--redis` picks the Redis condition during the revocations: `healthy` (the shared server),
`down` (a redis-server of the benchmark's own, killed once the instances are up) or `hung`
(the same, SIGSTOPped), or `all` three in turn. Without Redis, B learns the revocation from the
database's invalidation log, read every `invalidation_poll_interval` (`--poll`, default 1 s).

Prints a Markdown table and writes it to bench/results/revocation.md. Bounded: `--count`
revocations, each waiting at most PER_REVOCATION_SECONDS, the whole run at most RUN_SECONDS.
Servers: GATEWAY_BENCH_DATABASE_URL and GATEWAY_BENCH_REDIS_URL as in bench/verify.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bench.verify import DATABASE_URL, REDIS_URL, fresh_database
from gateway.services import open_services
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "revocation.md"
PERMISSION = "bench.read"
PATH = "/api/items"
PER_REVOCATION_SECONDS = 5.0
RUN_SECONDS = 600.0
START_SECONDS = 60.0
POLICY = """\
permissions:
  - name: {perm}
    title: Read the benchmark upstream
upstreams:
  bench:
    url: http://127.0.0.1:{port}
routes:
  - path: /api/**
    methods: [GET]
    upstream: bench
    permission: {perm}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gateway(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `gateway serve` process, stopped by its own handle (TERM, then KILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(15)


async def wait_ready(
    session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = await asyncio.to_thread(log.read_text)
            raise RuntimeError(f"gateway exited: {output[-2000:]}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"gateway at {url} not ready after {START_SECONDS:g}s")


@contextlib.asynccontextmanager
async def upstream() -> AsyncIterator[int]:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def status(session: aiohttp.ClientSession, url: str, key: str) -> int:
    async with session.get(url + PATH, headers={"X-API-KEY": key}) as response:
        await response.read()
        return response.status


async def probe(
    session: aiohttp.ClientSession, url: str, key: str, rtts: list[float]
) -> float | None:
    """Ask B back to back until it refuses the key; when that answer arrived, or None."""
    deadline = time.perf_counter() + PER_REVOCATION_SECONDS
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        answer = await status(session, url, key)
        now = time.perf_counter()
        rtts.append(now - sent)
        if answer == 401:
            return now
    return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the benchmark's own, to kill or hang; removed on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no redis-server binary for the down/hung rows")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(15)


async def run(count: int, via: str, mode: str = "healthy", poll: float = 1.0) -> str:
    if mode == "healthy":
        return await _run(count, via, mode, poll, REDIS_URL, None)
    with own_redis() as (url, proc):
        return await _run(count, via, mode, poll, url, proc)


async def _run(
    count: int,
    via: str,
    mode: str,
    poll: float,
    redis_url: str,
    redis_proc: subprocess.Popen[bytes] | None,
) -> str:
    namespace = f"kgbench{uuid.uuid4().hex[:10]}"
    delays: list[float] = []
    acks: list[float] = []
    rtts: list[float] = []
    missed = 0
    started = time.monotonic()
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with (
            fresh_database(DATABASE_URL) as database_url,
            upstream() as upstream_port,
            aiohttp.ClientSession() as session,
        ):
            work = Path(tempfile.mkdtemp(prefix="keygate-revocation-"))
            policy = work / "policy.yaml"
            policy.write_text(POLICY.format(perm=PERMISSION, port=upstream_port))
            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            env.update(
                {
                    "GATEWAY_MODE": "production",
                    "GATEWAY_SECRET": secrets.token_hex(32),
                    "GATEWAY_DATABASE_URL": database_url,
                    "GATEWAY_REDIS_URL": redis_url,
                    "GATEWAY_INVALIDATION_POLL_INTERVAL": str(poll),
                    "GATEWAY_REDIS_NAMESPACE": namespace,
                    "GATEWAY_POLICY": str(policy),
                    "GATEWAY_DATA_DIR": str(work),
                    "GATEWAY_LOCAL_CACHE_TTL": "600",
                    "GATEWAY_LOG_LEVEL": "WARNING",
                }
            )
            ports = free_port(), free_port()
            a, b = (f"http://127.0.0.1:{p}" for p in ports)
            with contextlib.ExitStack() as stack:
                # One after the other: both would migrate the fresh database at once otherwise.
                for port, url, name in ((ports[0], a, "a"), (ports[1], b, "b")):
                    log = work / f"{name}.log"
                    proc = stack.enter_context(gateway(env, port, log))
                    await wait_ready(session, url, proc, log)
                while int((await redis.pubsub_numsub(f"{namespace}:invalidate"))[0][1]) < 2:
                    if time.monotonic() - started > START_SECONDS:
                        raise RuntimeError("the instances did not subscribe to invalidations")
                    await asyncio.sleep(0.05)
                async with open_services(load_settings(environ=env), migrate=False) as services:
                    owner = await services.users.create(
                        email="bench@example.com",
                        password=None,
                        actor="bench",
                        is_service=True,
                        grants=[PERMISSION],
                    )
                    keys = [
                        (
                            await services.keys.create(
                                owner=owner, creator=None, label=f"k{i}", permissions=[PERMISSION]
                            )
                        ).text
                        for i in range(count)
                    ]
                    if redis_proc is not None and mode == "down":
                        redis_proc.kill()
                        redis_proc.wait(15)
                    elif redis_proc is not None and mode == "hung":
                        redis_proc.send_signal(signal.SIGSTOP)
                    for key in keys:
                        if time.monotonic() - started > RUN_SECONDS:
                            break
                        if await status(session, b, key) != 200:
                            raise RuntimeError("instance B did not accept a fresh key")
                        prober = asyncio.create_task(probe(session, b, key, rtts))
                        await asyncio.sleep(0.002)  # the prober is sending
                        sent = time.perf_counter()
                        if via == "api":
                            async with session.delete(
                                a + "/api/v1/api-keys/current",
                                headers={"Authorization": f"token {key}"},
                            ) as response:
                                await response.read()
                                if response.status != 200:
                                    raise RuntimeError(f"revoke through A: {response.status}")
                        else:
                            record = await services.keys.get_owned(key[:20], None)
                            await services.keys.revoke(record, actor=None)
                        acks.append(time.perf_counter() - sent)
                        refused = await prober
                        if refused is None:
                            missed += 1
                        else:
                            delays.append(refused - sent)
    finally:
        if redis_proc is None:
            names = await redis.keys(f"{namespace}:*")
            if names:
                await redis.delete(*names)
        await redis.aclose()
    return table(delays, acks, rtts, missed, via, f"Redis {mode}, poll interval {poll:g} s")


def table(
    delays: list[float],
    acks: list[float],
    rtts: list[float],
    missed: int,
    via: str,
    condition: str = "Redis healthy",
) -> str:
    ms = 1000.0
    how = (
        "the key revokes itself through A (`DELETE /api/v1/api-keys/current`)"
        if via == "api"
        else "store change + Redis publish (the `gateway keys revoke` path)"
    )
    lines = [
        f"# Revocation delay across instances: {condition} "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Two `gateway serve` processes (A, B), PostgreSQL + Redis on 127.0.0.1, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs. Revoke: {how}. Delay: from sending "
        "the revoke to the first 401 from B, which had the key cached in process (600 s TTL). "
        f"Load average {os.getloadavg()[0]:.2f} at the end.",
        "",
        "| measure | revocations | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in (
        ("revoke sent → first refusal on B", delays),
        ("revoke round trip on A (for scale)", acks),
        ("one probe request to B (resolution)", rtts),
    ):
        if values:
            lines.append(
                f"| {name} | {len(values) if values is not rtts else '-'} | "
                f"{pct(values, 0.5) * ms:.2f} | {pct(values, 0.99) * ms:.2f} | "
                f"{max(values) * ms:.2f} |"
            )
    lines.append("")
    lines.append(
        f"Refused within {PER_REVOCATION_SECONDS:g} s: {len(delays)} of {len(delays) + missed}"
        + (f" (mean {statistics.fmean(delays) * ms:.2f} ms)." if delays else ".")
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.revocation", description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="revocations to time")
    parser.add_argument(
        "--via", choices=["api", "store"], default="api", help="how instance A revokes"
    )
    parser.add_argument(
        "--redis",
        choices=["healthy", "down", "hung", "all"],
        default="healthy",
        help="the Redis condition during the revocations",
    )
    parser.add_argument(
        "--poll", type=float, default=1.0, help="invalidation_poll_interval of the instances"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 10_000:
        parser.error("--count must be between 1 and 10000")
    modes = ["healthy", "down", "hung"] if args.redis == "all" else [args.redis]
    text = "\n".join(asyncio.run(run(args.count, args.via, mode, args.poll)) for mode in modes)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Key verification micro-benchmark: `python -m bench.verify`.

Microseconds per `KeyVerifier.verify()` for an in-process hit, a Redis hit (in-process cache
off, so every call reads Redis) and a database miss (no Redis, in-process cache off, so every
call queries PostgreSQL), plus the whole data-plane auth step on a hit (credential
extraction, verification, route match, decision) and its parts. Each row is the median of
several timed rounds. Prints a Markdown table and writes it to bench/results/verify.md.

Uses a fresh PostgreSQL database (dropped afterwards) and its own Redis key namespace (deleted
afterwards). Servers: GATEWAY_BENCH_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/postgres) and GATEWAY_BENCH_REDIS_URL (default
redis://127.0.0.1:6379/0). Bounded: a fixed number of calls per row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis

from gateway.keys import format as keyformat
from gateway.proxy.decision import Allowed
from gateway.proxy.handler import decide_now
from gateway.services import Services, open_services
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "verify.md"
POLICY = ROOT / "policies" / "example.yaml"
DATABASE_URL = os.environ.get(
    "GATEWAY_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("GATEWAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ROUNDS = 5


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    name = f"keygate_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def seed(services: Services) -> str:
    owner = await services.users.create(
        email="bench@example.com",
        password=None,
        actor="bench",
        is_service=True,
        grants=["demo.reports.read"],
    )
    new = await services.keys.create(
        owner=owner, creator=None, label="bench", permissions=["demo.reports.read"]
    )
    return new.text


async def timed(call: Callable[[], Awaitable[object]], count: int) -> float:
    """Median over ROUNDS of the mean µs per call, `count` calls per round."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(count):
            await call()
        rounds.append((time.perf_counter_ns() - start) / count / 1000)
    return statistics.median(rounds)


def timed_sync(call: Callable[[], object], count: int) -> float:
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(count):
            call()
        rounds.append((time.perf_counter_ns() - start) / count / 1000)
    return statistics.median(rounds)


async def measure(settings: Settings, scale: float) -> list[tuple[str, float, str]]:
    rows: list[tuple[str, float, str]] = []
    hits, misses = int(200_000 * scale), int(2_000 * scale)
    # The hit rows run longer than the in-process TTL (5 s by default): a long one keeps every
    # call a hit, which is what they measure (an expired entry is a Redis row's business).
    async with open_services(replace(settings, local_cache_ttl=600.0)) as services:
        key = await seed(services)
        verifier = services.verifier
        await verifier.verify(key)
        rows.append(
            (
                "in-process hit: `verify()`",
                await timed(lambda: verifier.verify(key), hits),
                "HMAC + LRU lookup + state check + last-used stamp",
            )
        )
        raw_target = "/api/reports/daily?format=csv"
        headers = {"authorization": (), "x-api-key": (key,)}

        def values(name: str) -> Sequence[str]:
            return headers.get(name.lower(), ())

        def auth_step() -> object:
            # What the fast front runs for every request whose key is in the in-process cache.
            decision = decide_now(services, "GET", raw_target, values, "127.0.0.1")
            if not isinstance(decision, Allowed):
                raise RuntimeError(f"the benchmark request was not allowed: {decision!r}")
            return decision

        rows.append(
            (
                "whole auth step on a hit",
                timed_sync(auth_step, hits),
                "`decide_now`: extract credential, canonicalise, route, verify, authorize",
            )
        )
        hasher = services.hasher
        rows.append(
            ("  part: HMAC-SHA256 of the key", timed_sync(lambda: hasher.digest(key), hits), "")
        )
        rows.append(
            ("  part: offline parse + checksum", timed_sync(lambda: keyformat.parse(key), hits), "")
        )
        lookups = verifier.lookups
        assert lookups == 1, "the hit rows must not have touched the database"

    async with open_services(replace(settings, local_cache_ttl=0.0)) as services:
        await services.verifier.verify(key)  # the record is in Redis from the first instance
        before = services.verifier.lookups
        assert services.shared is not None
        name = services.shared.name(services.hasher.digest(key))
        client = aioredis.Redis.from_url(REDIS_URL)
        rows.append(
            (
                "  for comparison: a bare Redis GET",
                await timed(lambda: client.get(name), misses),
                "redis-py round trip on 127.0.0.1",
            )
        )
        await client.aclose()
        rows.append(
            (
                "Redis hit: `verify()`",
                await timed(lambda: services.verifier.verify(key), misses),
                "in-process cache off; one GET + JSON + principal",
            )
        )
        assert services.verifier.lookups == before, "Redis rows must not reach the database"

    async with open_services(replace(settings, local_cache_ttl=0.0, redis_url=None)) as services:
        conn = await asyncpg.connect(settings.database_url)
        rows.append(
            (
                "  for comparison: a bare `SELECT 1`",
                await timed(lambda: conn.fetchval("SELECT 1"), misses),
                "asyncpg round trip on 127.0.0.1",
            )
        )
        await conn.close()
        rows.append(
            (
                "database miss (PostgreSQL): `verify()`",
                await timed(lambda: services.verifier.verify(key), misses),
                "no Redis, in-process cache off; one indexed SELECT ... JOIN",
            )
        )
        assert services.verifier.lookups >= misses
    return rows


def table(rows: list[tuple[str, float, str]], loop: str) -> str:
    lines = [
        f"# Key verification ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Python {platform.python_version()}, {loop} event loop, {os.cpu_count()} CPUs, "
        f"PostgreSQL and Redis on 127.0.0.1; median of {ROUNDS} rounds; load average "
        f"{os.getloadavg()[0]:.2f} at the end (other work on the machine inflates every row).",
        "",
        "| case | µs per call | what it covers |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {us:.2f} | {what} |" for name, us, what in rows]
    return "\n".join(lines) + "\n"


async def main_async(scale: float) -> str:
    redis = aioredis.Redis.from_url(REDIS_URL)
    namespace = f"kgbench{uuid.uuid4().hex[:10]}"
    try:
        async with fresh_database(DATABASE_URL) as database_url:
            settings = Settings(
                mode="development",
                database_url=database_url,
                redis_url=REDIS_URL,
                redis_namespace=namespace,
                secret=secrets.token_bytes(32),
                secret_source="bench",  # noqa: S106 - where the secret came from, not one
                policy=(POLICY,),
            )
            rows = await measure(settings, scale)
    finally:
        names = await redis.keys(f"{namespace}:*")
        if names:
            await redis.delete(*names)
        await redis.aclose()
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    return table(rows, loop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the call counts")
    args = parser.parse_args(argv)
    try:
        import uvloop  # the server runs on uvloop; measure on it too
    except ImportError:  # pragma: no cover - a dependency on every supported platform
        runner = asyncio.run
    else:
        runner = uvloop.run
    text = runner(main_async(args.scale))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

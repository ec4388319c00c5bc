"""`python -m bench.limits`: what a rate limit on every request costs, one worker.

One Keygate process (fast front, 1 worker) serves two routes to the same nginx upstream:
`/api/**` without limits and `/limited/**` with one limit (`10000000/s`, high enough that it
never refuses, so both rows forward every request). The two are measured in one interleaved
run (medians of --reps runs each), so machine noise hits both alike. With `--redis URL`
(a loopback Redis), a second process does the same with the limit kept in Redis (one
EVALSHA round trip per request), and a third with leases (`rate_limit_lease`, --lease).
Writes bench/results/limits.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import servers
from bench.run import (
    PATH,
    RESULTS,
    Target,
    check,
    find_tools,
    gateway_env,
    make_key,
    measure,
)

LIMITED = PATH.replace("/api/", "/limited/")
EXTRA_POLICY = """\
limits:
  bench: 10000000/s
"""
LIMITED_ROUTE = """\
  - path: /limited/**
    methods: [GET]
    upstream: bench
    permission: bench.read
    limits: [bench]
"""


def _limited_env(work: Path, upstream: int) -> dict[str, str]:
    env = gateway_env(work, upstream)
    policy = Path(env["GATEWAY_POLICY"])
    policy.write_text(EXTRA_POLICY + policy.read_text() + LIMITED_ROUTE)
    return {**env, "GATEWAY_FAST_DATA_PLANE": "true"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.limits", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--redis", help="redis://127.0.0.1:PORT/DB for the Redis rows")
    parser.add_argument("--lease", type=int, default=100, help="rate_limit_lease of the last row")
    parser.add_argument("--out", type=Path, default=RESULTS.parent / "limits.md")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 30 and 0 < args.reps <= 10 and 0 < args.connections <= 1000):
        parser.error("keep --seconds <= 30, --reps <= 10, --connections <= 1000")
    if args.redis and not args.redis.startswith(("redis://127.0.0.1", "redis://localhost")):
        parser.error("--redis must be a loopback redis:// URL")
    tools = find_tools(install=False)
    if not (tools.nginx and tools.wrk):
        parser.error("needs nginx and wrk (apt-get install -y nginx wrk)")
    assert tools.nginx is not None
    load = os.getloadavg()[0]
    procs = []
    with tempfile.TemporaryDirectory(prefix="keygate-bench-") as tmp:
        work = Path(tmp)
        try:
            up, local, shared, leased = (servers.free_port() for _ in range(4))
            procs.append(servers.nginx_upstream(tools.nginx, work, up))
            env = _limited_env(work, up)
            key = make_key(env)
            auth = {"X-API-KEY": key}
            procs.append(servers.keygate(env, local, 1))
            targets = [
                Target(
                    "no limit (in-process engine process)", f"http://127.0.0.1:{local}{PATH}", auth
                ),
                Target("one limit, in-process engine", f"http://127.0.0.1:{local}{LIMITED}", auth),
            ]
            if args.redis:
                redis_env = {
                    **env,
                    "GATEWAY_REDIS_URL": args.redis,
                    "GATEWAY_REDIS_NAMESPACE": "kgbench",
                }
                procs.append(servers.keygate(redis_env, shared, 1))
                lease_env = {**redis_env, "GATEWAY_RATE_LIMIT_LEASE": str(args.lease)}
                procs.append(servers.keygate(lease_env, leased, 1))
                targets += [
                    Target("no limit (Redis process)", f"http://127.0.0.1:{shared}{PATH}", auth),
                    Target("one limit, Redis engine", f"http://127.0.0.1:{shared}{LIMITED}", auth),
                    Target("no limit (Redis, leases)", f"http://127.0.0.1:{leased}{PATH}", auth),
                    Target(
                        f"one limit, Redis engine, leases of {args.lease}",
                        f"http://127.0.0.1:{leased}{LIMITED}",
                        auth,
                    ),
                ]
            for t in targets:
                check(t)
                measure(tools, t, 1.0, args.connections, 1)
            for rep in range(args.reps):
                for t in targets:
                    t.results.append(measure(tools, t, args.seconds, args.connections, 1))
                    rps = t.results[-1].rps
                    print(
                        f"bench: run {rep + 1}/{args.reps} {t.name}: {rps:,.0f} req/s", flush=True
                    )
        finally:
            for proc in reversed(procs):
                servers.stop(proc)
    report = _table(targets, args, load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print()
    print(report)
    return 0


def _table(targets: list[Target], args: argparse.Namespace, load: float) -> str:
    lines = [
        f"## Rate limits: cost of one limit on every request ({time.strftime('%Y-%m-%d')})",
        "",
        f"Medians of {args.reps} interleaved runs of `wrk -t1 -c{args.connections} "
        f"-d{args.seconds:g}s`, GET through the fast front (1 worker) to nginx `return 200`; "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start.",
        "",
        "| target | req/s | p50 | p99 | vs the same process without limits |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for index, t in enumerate(targets):
        base = targets[index - index % 2]
        ratio = t.median("rps") / base.median("rps")
        lines.append(
            f"| {t.name} | {t.median('rps'):,.0f} | {t.median('p50_ms'):.2f} ms "
            f"| {t.median('p99_ms'):.2f} ms | {ratio:.2f}x |"
        )
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    sys.exit(main())

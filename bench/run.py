"""`make bench`: throughput of Keygate against nginx proxy_pass, on this machine.

Measures, one worker each, with interleaved repetitions and medians:
  (a) the fixed upstream directly (nginx `return 200`),
  (b) nginx `proxy_pass` to it with upstream keep-alive,
  (c) Keygate in front of it, with a valid API key (verified-key cache hit): the fast front
      (the default) and the aiohttp server (GATEWAY_FAST_DATA_PLANE=false),
  (d) both with 2 workers, to show 1 -> 2 scaling.
Writes a Markdown table to bench/results/latest.md and prints it. Needs nginx and wrk (Debian
packages); as root it installs them with apt-get, otherwise it says what is missing and falls
back to a Python upstream and load generator (numbers then are only roughly comparable).
Only 127.0.0.1 is ever contacted; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import servers
from bench.load import Result, run_python, run_wrk

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.md"
PATH = "/api/items?page=1"
PERMISSION = "bench.read"
POLICY = """\
permissions:
  - name: {perm}
    title: Read the benchmark upstream
upstreams:
  bench:
    url: http://127.0.0.1:{port}
    pool_size: 128
routes:
  - path: /api/**
    methods: [GET]
    upstream: bench
    permission: {perm}
"""


FAST_ONE = "Keygate fast front, 1 worker"
FAST_TWO = "Keygate fast front, 2 workers"
KG_ONE = "Keygate aiohttp server, 1 worker"
KG_TWO = "Keygate aiohttp server, 2 workers"


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    results: list[Result] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.results)


@dataclass(frozen=True, slots=True)
class Tools:
    nginx: str | None
    wrk: str | None


def find_tools(install: bool) -> Tools:
    def locate() -> Tools:
        nginx = shutil.which("nginx") or next(
            (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
            None,
        )
        return Tools(nginx, shutil.which("wrk"))

    tools = locate()
    missing = [name for name, path in (("nginx", tools.nginx), ("wrk", tools.wrk)) if not path]
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"bench: installing {' '.join(missing)} with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = ["apt-get", "install", "-y", "-q", *missing]
        if subprocess.run(command, env=env, capture_output=True, timeout=600).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            subprocess.run(command, env=env, capture_output=True, timeout=600)
        tools = locate()
    if not tools.nginx:
        print(
            "bench: nginx is missing (apt-get install -y nginx): using a Python upstream and "
            "skipping the nginx proxy_pass row, so no Keygate/nginx ratio",
            flush=True,
        )
    if not tools.wrk:
        print(
            "bench: wrk is missing (apt-get install -y wrk): using the slower Python load "
            "generator, which competes with the servers for the CPU",
            flush=True,
        )
    return tools


def gateway_env(work: Path, upstream_port: int) -> dict[str, str]:
    policy = work / "bench-policy.yaml"
    policy.write_text(POLICY.format(perm=PERMISSION, port=upstream_port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_MODE": "production",
            "GATEWAY_SECRET": secrets.token_hex(32),
            "GATEWAY_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
            "GATEWAY_POLICY": str(policy),
            "GATEWAY_DATA_DIR": str(work),
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_ACCESS_LOG": "false",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def make_key(env: dict[str, str]) -> str:
    """A user holding the permission and a key for it, created in the benchmark database."""
    from gateway.services import open_services
    from gateway.settings import load_settings

    async def create() -> str:
        async with open_services(load_settings(environ=env)) as services:
            user = await services.users.create(
                email="bench@example.com",
                password=None,
                actor="bench",
                is_service=True,
                grants=[PERMISSION],
            )
            new = await services.keys.create(
                owner=user, creator=None, label="bench", permissions=[PERMISSION]
            )
            return new.text

    return asyncio.run(create())


def check(target: Target) -> None:
    request = urllib.request.Request(target.url, headers=target.headers)  # noqa: S310 - 127.0.0.1 only
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode(errors="replace")
    if status != 200 or '"bench-upstream"' not in body:
        raise RuntimeError(f"{target.name}: unexpected answer {status} {body[:200]!r}")


def measure(tools: Tools, target: Target, seconds: float, connections: int, threads: int) -> Result:
    if tools.wrk:
        return run_wrk(
            tools.wrk,
            target.url,
            target.headers,
            seconds=seconds,
            connections=connections,
            threads=threads,
        )
    return run_python(target.url, target.headers, seconds=seconds, connections=connections)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(targets: list[Target], tools: Tools, args: argparse.Namespace) -> str:
    by_name = {t.name: t for t in targets}
    nginx_proxy = by_name.get("nginx proxy_pass")
    lines = [
        "| target | req/s | p50 latency | p99 latency | vs nginx proxy_pass |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for t in targets:
        ratio = f"{t.median('rps') / nginx_proxy.median('rps'):.2f}x" if nginx_proxy else "n/a"
        errors = sum(r.errors for r in t.results)
        note = f" ({errors} errors)" if errors else ""
        lines.append(
            f"| {t.name}{note} | {t.median('rps'):,.0f} | {t.median('p50_ms'):.2f} ms "
            f"| {t.median('p99_ms'):.2f} ms | {ratio} |"
        )
    summary = []
    for mode, one_name, two_name in (
        ("fast front", FAST_ONE, FAST_TWO),
        ("aiohttp server", KG_ONE, KG_TWO),
    ):
        one, two = by_name[one_name], by_name[two_name]
        if nginx_proxy:
            summary.append(
                f"**Keygate ({mode}) / nginx proxy_pass, 1 worker each: "
                f"{one.median('rps') / nginx_proxy.median('rps'):.2f}x**"
            )
        summary.append(
            f"Keygate ({mode}) 1 -> 2 workers: {two.median('rps') / one.median('rps'):.2f}x"
        )
    generator = (
        f"wrk -t{args.threads} -c{args.connections} -d{args.seconds:g}s"
        if tools.wrk
        else f"Python asyncio generator, {args.connections} connections, {args.seconds:g}s"
    )
    upstream = "nginx `return 200` (1 worker)" if tools.nginx else "Python asyncio fixed answer"
    return "\n".join(
        [
            f"## Benchmark ({datetime.now(UTC):%Y-%m-%d})",
            "",
            f"Medians of {args.reps} interleaved runs of `{generator}` per target, GET {PATH}, "
            f"a {len(servers.BODY)}-byte JSON answer from {upstream}. Keygate checks a valid "
            "API key on every request (verified-key cache hit) and forwards with identity "
            "headers. All on 127.0.0.1.",
            f"Machine: {os.cpu_count()} CPUs, {_cpu_model()}, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}.",
            f"Load average when the run started: {args.load_before:.2f} (1 min); other work on "
            "the machine skews every row, the 2-worker row most (it needs a free core).",
            "Reproduce with `make bench` (or `python -m bench.run --help`).",
            "",
            *lines,
            "",
            *summary,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--reps", type=int, default=5, help="interleaved runs per target")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (load generator)")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (
        0 < args.seconds <= 30
        and 0 < args.reps <= 10
        and 0 < args.connections <= 1000
        and 0 < args.threads <= 8
    ):
        parser.error("keep --seconds <= 30, --reps <= 10, --connections <= 1000, --threads <= 8")
    tools = find_tools(install=not args.no_install)
    args.load_before = os.getloadavg()[0]
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="keygate-bench-") as tmp:
        work = Path(tmp)
        try:
            up, proxy, kg1, kg2, fast1, fast2 = (servers.free_port() for _ in range(6))
            if tools.nginx:
                procs.append(servers.nginx_upstream(tools.nginx, work, up))
                procs.append(servers.nginx_proxy(tools.nginx, work, proxy, up))
            else:
                procs.append(servers.python_upstream(up))
            env = gateway_env(work, up)
            key = make_key(env)
            fast = {**env, "GATEWAY_FAST_DATA_PLANE": "true"}
            plain = {**env, "GATEWAY_FAST_DATA_PLANE": "false"}
            procs.append(servers.keygate(plain, kg1, 1))
            procs.append(servers.keygate(plain, kg2, 2))
            procs.append(servers.keygate(fast, fast1, 1))
            procs.append(servers.keygate(fast, fast2, 2))
            auth = {"X-API-KEY": key}
            targets = [Target("upstream direct", f"http://127.0.0.1:{up}{PATH}", auth)]
            if tools.nginx:
                targets.append(Target("nginx proxy_pass", f"http://127.0.0.1:{proxy}{PATH}", auth))
            targets += [
                Target(FAST_ONE, f"http://127.0.0.1:{fast1}{PATH}", auth),
                Target(KG_ONE, f"http://127.0.0.1:{kg1}{PATH}", auth),
                Target(FAST_TWO, f"http://127.0.0.1:{fast2}{PATH}", auth),
                Target(KG_TWO, f"http://127.0.0.1:{kg2}{PATH}", auth),
            ]
            for t in targets:
                check(t)
                measure(tools, t, 1.0, args.connections, args.threads)  # warm-up: pools, caches
            for rep in range(args.reps):
                for t in targets:
                    t.results.append(
                        measure(tools, t, args.seconds, args.connections, args.threads)
                    )
                    print(
                        f"bench: run {rep + 1}/{args.reps} {t.name}: "
                        f"{t.results[-1].rps:,.0f} req/s",
                        flush=True,
                    )
        finally:
            for proc in reversed(procs):
                servers.stop(proc)
    report = table(targets, tools, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print()
    print(report)
    print(f"(written to {args.out}, {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

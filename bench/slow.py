"""Slow clients against one Keygate worker: `python -m bench.slow` (also run by `make bench`).

One Keygate worker (the fast front, the default server) in front of the upstream bench/run.py
uses, with a valid key. The normal client (wrk, as bench/run.py runs it) is measured alone
(the baseline), then while `--idle` connections that send nothing and `--trickle` connections
that send a request line and then one header line every `--every` seconds (never finishing the
head) are held against the same worker, then once more after they are gone (ended by the
gateway, or dropped by the bad clients when the hold is over). The bad clients live in one
low-priority asyncio process (bench/badclients.py) and are held at most `--hold` seconds after
the last one connected: a gateway without client deadlines never closes them,
and those are reported as still open.

Reports the bad connections' lifetimes until the gateway ended them (min / median / max), how
it ended them (an answer such as 408, or a plain close), how many were still open at the end,
and the normal client's req/s, p50 and p99 next to its baseline. Writes a Markdown table to
bench/results/slow.md and prints it. Only 127.0.0.1 is contacted; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import servers
from bench.badclients import CONNECT_BATCH, CONNECT_SECONDS, IDLE, TRICKLE, raise_nofile
from bench.lifetimes import Ended, Summary, summarise
from bench.load import Result
from bench.run import (
    PATH,
    Target,
    Tools,
    _cpu_model,
    check,
    find_tools,
    gateway_env,
    make_key,
    measure,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "slow.md"
# Gateway settings the options set (as GATEWAY_* variables); unset ones keep their defaults.
SETTINGS = ("client_header_timeout", "keepalive_timeout", "max_connections")
# Before counting the worker's descriptors: time for it to accept, or close, what just changed.
SETTLE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Usage:
    """The gateway worker's open file descriptors and resident memory at one moment."""

    fds: int | None
    rss_kib: int | None


def worker_of(master: int) -> int:
    """The one worker process of `gateway serve --workers 1` (the master only supervises)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == master and b"spawn_main" in command:
            return int(entry.name)
    raise RuntimeError(f"gateway serve (pid {master}) has no worker process")


def usage(pid: int) -> Usage:
    try:
        fds: int | None = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None
    rss = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return Usage(fds, rss)


@dataclass
class Run:
    """What one scenario run measured."""

    baseline: Result
    during: Result
    after: Result
    records: list[Ended]
    failed: int
    ramp: float
    bad_cpu: float
    bad_wall: float
    before: Usage
    held: Usage
    gone: Usage
    settings: dict[str, str]


def bad_clients(port: int, args: argparse.Namespace) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.badclients",
            str(port),
            f"--idle={args.idle}",
            f"--trickle={args.trickle}",
            f"--every={args.every}",
            f"--hold={args.hold}",
            f"--path={PATH}",
            f"--nice={args.nice}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_ready(proc: subprocess.Popen[str], seconds: float) -> dict[str, float]:
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], seconds)
    line = proc.stdout.readline() if readable else ""
    if not line:
        raise RuntimeError(f"the bad clients did not connect within {seconds:g}s")
    ready: dict[str, float] = json.loads(line)
    return ready


def scenario(tools: Tools, args: argparse.Namespace) -> Run:
    procs: list[subprocess.Popen[bytes]] = []
    bad: subprocess.Popen[str] | None = None
    with tempfile.TemporaryDirectory(prefix="keygate-bench-slow-") as tmp:
        work = Path(tmp)
        try:
            up, port = servers.free_port(), servers.free_port()
            if tools.nginx:
                procs.append(servers.nginx_upstream(tools.nginx, work, up))
            else:
                procs.append(servers.python_upstream(up))
            env = gateway_env(work, up)
            env["GATEWAY_FAST_DATA_PLANE"] = "true"
            for name in SETTINGS:
                if getattr(args, name) is not None:
                    env[f"GATEWAY_{name.upper()}"] = str(getattr(args, name))
            effective = effective_settings(env)
            key = make_key(env)
            gateway = servers.keygate(env, port, 1)
            procs.append(gateway)
            target = Target("fast front", f"http://127.0.0.1:{port}{PATH}", {"X-API-KEY": key})
            check(target)
            worker = worker_of(gateway.pid)

            def load() -> Result:
                return measure(tools, target, args.seconds, args.connections, args.threads)

            measure(tools, target, 1.0, args.connections, args.threads)  # warm-up
            baseline = load()
            print(f"bench.slow: alone: {baseline.rps:,.0f} req/s", flush=True)
            time.sleep(SETTLE_SECONDS)
            before = usage(worker)
            bad = bad_clients(port, args)
            batches = -(-(args.idle + args.trickle) // CONNECT_BATCH)
            ready = read_ready(bad, batches * CONNECT_SECONDS + 30)
            time.sleep(SETTLE_SECONDS)
            held = usage(worker)
            print(f"bench.slow: {ready['ready']:.0f} bad connections open", flush=True)
            during = load()
            print(f"bench.slow: with bad connections: {during.rps:,.0f} req/s", flush=True)
            out, _ = bad.communicate(timeout=args.hold + 60)
            report = json.loads(out.strip().splitlines()[-1])
            time.sleep(SETTLE_SECONDS)
            gone = usage(worker)
            after = load()
            print(f"bench.slow: after: {after.rps:,.0f} req/s", flush=True)
        finally:
            if bad is not None and bad.poll() is None:
                bad.kill()
                bad.wait(servers.STOP_SECONDS)
            for proc in reversed(procs):
                servers.stop(proc)
    return Run(
        baseline=baseline,
        during=during,
        after=after,
        records=[Ended(kind, seconds, how) for kind, seconds, how in report["connections"]],
        failed=int(report["failed"]),
        ramp=float(report["ramp"]),
        bad_cpu=float(report["cpu"]),
        bad_wall=float(report["wall"]),
        before=before,
        held=held,
        gone=gone,
        settings=effective,
    )


def effective_settings(env: dict[str, str]) -> dict[str, str]:
    """The client deadlines and cap as the gateway reads them from this environment."""
    from gateway.settings import load_settings

    settings = load_settings(environ=env)
    return {name: f"{getattr(settings, name):g}" for name in SETTINGS}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _row(summary: Summary) -> str:
    how = ", ".join(f"{name}: {count:,}" for name, count in summary.how) or "-"
    return (
        f"| {summary.kind} | {summary.opened:,} | {summary.ended:,} | {_seconds(summary.shortest)} "
        f"| {_seconds(summary.median)} | {_seconds(summary.longest)} | {summary.still_open:,} "
        f"| {how} |"
    )


def _load_row(name: str, result: Result, baseline: Result) -> str:
    errors = f" ({result.errors} errors)" if result.errors else ""
    return (
        f"| {name}{errors} | {result.rps:,.0f} | {result.p50_ms:.2f} ms | {result.p99_ms:.2f} ms "
        f"| {result.rps / baseline.rps:.2f}x |"
    )


def _usage(u: Usage) -> str:
    fds = "n/a" if u.fds is None else f"{u.fds:,} fds"
    rss = "n/a" if u.rss_kib is None else f"{u.rss_kib / 1024:.0f} MiB"
    return f"{fds}, {rss}"


def table(run: Run, tools: Tools, args: argparse.Namespace) -> str:
    generator = (
        f"wrk -t{args.threads} -c{args.connections} -d{args.seconds:g}s"
        if tools.wrk
        else f"Python asyncio generator, {args.connections} connections, {args.seconds:g}s"
    )
    upstream = "nginx `return 200`" if tools.nginx else "a Python asyncio fixed answer"
    settings = ", ".join(f"`{name}` {value}" for name, value in run.settings.items())
    bad = f"{args.idle + args.trickle:,} bad connections held"
    failed = f" {run.failed:,} bad connections could not connect." if run.failed else ""
    return "\n".join(
        [
            f"## Slow clients ({datetime.now(UTC):%Y-%m-%d})",
            "",
            f"One Keygate worker (fast front) in front of {upstream}, GET {PATH} with a valid "
            f"API key; gateway settings {settings}. Bad clients, from one asyncio process "
            f"at nice {args.nice}: {args.idle:,} idle connections (connect, send nothing) and "
            f"{args.trickle:,} trickling ones (`GET {PATH} HTTP/1.1`, then one header line "
            f"every {args.every:g} s, the head never finished), all open after "
            f"{run.ramp:.2f} s and held at most {args.hold:g} s more.{failed} A lifetime runs "
            "from the client's connect to the gateway ending the connection, as the client "
            "saw it.",
            f"Machine: {os.cpu_count()} CPUs, {_cpu_model()}, "
            f"Python {platform.python_version()}; load average at the start "
            f"{args.load_before:.2f}. Reproduce with `make bench-slow` "
            "(or `python -m bench.slow --help`).",
            "",
            "| bad connections | opened | ended by the gateway | min | median | max "
            "| still open at the end | how they ended |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            _row(summarise(IDLE, run.records)),
            _row(summarise(TRICKLE, run.records)),
            "",
            f"| normal client (`{generator}`) | req/s | p50 latency | p99 latency | vs alone |",
            "| --- | ---: | ---: | ---: | ---: |",
            _load_row("alone (baseline)", run.baseline, run.baseline),
            _load_row(f"with the {bad}", run.during, run.baseline),
            _load_row("after they were gone", run.after, run.baseline),
            "",
            f"Gateway worker: {_usage(run.before)} alone; {_usage(run.held)} with the bad "
            f"connections open; {_usage(run.gone)} after. The bad-client process used "
            f"{run.bad_cpu:.2f} s of CPU in {run.bad_wall:.1f} s.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.slow", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--idle", type=int, default=1000, help="connections that send nothing")
    parser.add_argument("--trickle", type=int, default=300, help="connections that trickle")
    parser.add_argument("--every", type=float, default=4.0, help="seconds between header lines")
    parser.add_argument(
        "--hold", type=float, default=20.0, help="seconds the bad clients stay, at most"
    )
    parser.add_argument(
        "--nice", type=int, default=10, help="CPU priority offset of the bad clients"
    )
    parser.add_argument("--client-header-timeout", type=float, help="gateway setting (seconds)")
    parser.add_argument("--keepalive-timeout", type=float, help="gateway setting (seconds)")
    parser.add_argument("--max-connections", type=int, help="gateway setting")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (
        0 < args.seconds <= 30
        and 0 < args.connections <= 1000
        and 0 < args.threads <= 8
        and 0 <= args.idle <= 10_000
        and 0 <= args.trickle <= 10_000
        and 0 < args.idle + args.trickle <= 10_000
        and 0.1 <= args.every <= 60
        and args.seconds < args.hold <= 300
        and 0 <= args.nice <= 19
    ):
        parser.error(
            "keep --seconds <= 30 and below --hold <= 300, --connections <= 1000, "
            "--threads <= 8, 1 to 10,000 bad connections, --every from 0.1 to 60, --nice 0 to 19"
        )
    # Children inherit the limit: the gateway needs room for the bad connections plus wrk's,
    # its upstream pool and its own files.
    raise_nofile(args.idle + args.trickle + args.connections + 1024)
    tools = find_tools(install=not args.no_install)
    args.load_before = os.getloadavg()[0]
    started = time.monotonic()
    report = table(scenario(tools, args), tools, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print()
    print(report)
    print(f"(written to {args.out}, {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

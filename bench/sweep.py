"""A concurrency sweep: nginx `proxy_pass` and Keygate's fast front (one worker each) at
1, 50, 1,000 and 5,000 keep-alive connections, with CPU per request.

    python -m bench.sweep [--connections 1,50,1000,5000] [--seconds 6] [--reps 3]
                          [--compiled build/fast-tree] [--busy-poll 200]

Rows, interleaved per repetition: nginx proxy_pass; nginx + auth_request to a small aiohttp
key service (bench/keyservice.py, the do-it-yourself alternative; its CPU is nginx's plus the
key service's, both on the proxy's CPU); Keygate (the sources), and with
`--compiled` Keygate from a tree whose data plane mypyc compiled (`make fast-tree`); with
`--busy-poll US` each Keygate build once more with setting `busy_poll_us` at US. Every
proxy runs on CPU 0 and wrk and the upstream on CPU 1 (taskset) when the machine has two
CPUs or more, so a proxy's own core is its limit. Each cell is the median of the runs: req/s,
p50/p99 latency, error answers (non-2xx, e.g. a 504 "no upstream connection became free"),
and CPU microseconds per request from the proxy process's own accounting (/proc, utime +
stime of the process and its children, over the requests wrk completed). At one connection
the table also gives the latency each proxy adds over going to the upstream directly.
Keygate keeps its default upstream `pool_size` (100), nginx 64 idle keep-alive connections.
Writes bench/results/sweep.md. Only 127.0.0.1 is contacted; every run is bounded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import servers
from bench.load import Result, parse_wrk
from bench.run import PATH, check, find_tools, gateway_env, make_key
from bench.run import Target as _Checked

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "sweep.md"
TICKS = os.sysconf("SC_CLK_TCK")

NGINX = "nginx proxy_pass"
DIY = "nginx + auth_request (aiohttp key service)"
POLICY_POOL = "    pool_size: 128\n"  # bench.run's policy; the sweep keeps Keygate's default


# The proxy under test on CPU 0, wrk and the upstream on CPU 1, where there are two.
TWO_CPUS = (os.cpu_count() or 1) >= 2
PROXY_CPU = 0 if TWO_CPUS else None
LOAD_CPU = 1 if TWO_CPUS else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` and its living descendants."""
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass
class Cell:
    results: list[Result] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.results)


@dataclass
class Row:
    name: str
    url: str
    pids: tuple[int, ...]  # whose CPU is counted (none: the upstream itself)
    cells: dict[int, Cell] = field(default_factory=dict)


def wrk(binary: str, url: str, headers: dict[str, str], seconds: float, conns: int) -> Result:
    threads = 1 if conns < 1000 else 2
    args = [binary, f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        servers.pinned(LOAD_CPU, [*args, url]),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    return parse_wrk(out)


def run(args: argparse.Namespace) -> str:
    tools = find_tools(install=not args.no_install)
    if not (tools.nginx and tools.wrk):
        raise SystemExit("bench.sweep needs nginx and wrk (apt-get install -y nginx wrk)")
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="keygate-sweep-") as tmp:
        work = Path(tmp)
        try:
            up, proxy, authproxy, keys, pure, compiled = (servers.free_port() for _ in range(6))
            procs.append(servers.nginx_upstream(tools.nginx, work, up, LOAD_CPU))
            nginx = servers.nginx_proxy(tools.nginx, work, proxy, up, PROXY_CPU)
            procs.append(nginx)
            env = gateway_env(work, up)
            policy = Path(env["GATEWAY_POLICY"])
            policy.write_text(policy.read_text().replace(POLICY_POOL, ""))
            key = make_key(env)
            keyservice = servers.key_service(keys, [key], work, PROXY_CPU)
            procs.append(keyservice)
            diy = servers.nginx_auth_proxy(tools.nginx, work, authproxy, up, keys, PROXY_CPU)
            procs.append(diy)
            fast = {**env, "GATEWAY_FAST_DATA_PLANE": "true"}
            auth = {"X-API-KEY": key}
            rows.append(Row("upstream direct", f"http://127.0.0.1:{up}{PATH}", ()))
            rows.append(Row(NGINX, f"http://127.0.0.1:{proxy}{PATH}", (nginx.pid,)))
            rows.append(Row(DIY, f"http://127.0.0.1:{authproxy}{PATH}", (diy.pid, keyservice.pid)))
            gates = [("Keygate fast front (sources)", pure, ROOT, sys.executable, fast)]
            if args.compiled:
                tree = args.compiled.resolve()
                gates.append(
                    ("Keygate fast front (compiled)", compiled, tree, sys.executable, fast)
                )
            if args.busy_poll:
                polling = {**fast, "GATEWAY_BUSY_POLL_US": str(args.busy_poll)}
                for build, tree in gates_of(args):
                    label = f"Keygate fast front ({build}, busy_poll_us {args.busy_poll})"
                    gates.append((label, servers.free_port(), tree, sys.executable, polling))
            for python in args.interpreter:
                label = f"Keygate fast front (sources, {python_label(python)})"
                gates.append((label, servers.free_port(), ROOT, str(python), fast))
            for name, port, tree, python, gate_env in gates:
                proc = servers.keygate(gate_env, port, 1, python=python, tree=tree, cpu=PROXY_CPU)
                procs.append(proc)
                rows.append(Row(name, f"http://127.0.0.1:{port}{PATH}", (proc.pid,)))
            for row in rows:
                check(_Checked(row.name, row.url, auth))
                wrk(tools.wrk, row.url, auth, 1.0, 50)  # warm-up: pools, caches
            for rep in range(args.reps):
                for conns in args.connections:
                    for row in rows:
                        if not row.pids and conns != 1:
                            continue
                        before = sum(cpu_seconds(pid) for pid in row.pids)
                        result = wrk(tools.wrk, row.url, auth, args.seconds, conns)
                        used = sum(cpu_seconds(pid) for pid in row.pids) - before
                        cell = row.cells.setdefault(conns, Cell())
                        cell.results.append(result)
                        requests = result.rps * args.seconds
                        cell.cpu_us.append(used / requests * 1e6 if requests else 0.0)
                        print(
                            f"sweep: run {rep + 1}/{args.reps} c={conns} {row.name}: "
                            f"{result.rps:,.0f} req/s p50 {result.p50_ms:.2f} ms "
                            f"p99 {result.p99_ms:.2f} ms errors {result.errors} "
                            f"cpu {cell.cpu_us[-1]:.1f} us/req",
                            flush=True,
                        )
                        time.sleep(0.5)
        finally:
            for proc in reversed(procs):
                servers.stop(proc)
    memory = [] if args.no_memory else cache_memory(gates_of(args))
    return report(rows, args, memory)


def python_label(python: Path | str) -> str:
    """Which Python `python` is (the path and the version it reports)."""
    version = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    return f"Python {version} at {python}"


def gates_of(args: argparse.Namespace) -> list[tuple[str, Path]]:
    trees = [("sources", ROOT)]
    if args.compiled:
        trees.append(("compiled", args.compiled.resolve()))
    return trees


def cache_memory(trees: list[tuple[str, Path]]) -> list[str]:
    """bench/cache_memory.py's line for each tree, each in a process of its own."""
    lines = []
    for name, tree in trees:
        out = subprocess.run(
            [sys.executable, "-m", "bench.cache_memory"],
            env={**os.environ, "PYTHONPATH": str(tree)},
            cwd=tree,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout.strip()
        print(f"sweep: {name}: {out}", flush=True)
        lines.append(f"- Keygate ({name}): {out}")
    return lines


def report(rows: list[Row], args: argparse.Namespace, memory: list[str]) -> str:
    nginx = next(r for r in rows if r.name == NGINX)
    lines = [
        f"## Concurrency sweep ({args.reps} interleaved runs of {args.seconds:g} s per cell, "
        "medians; proxy on CPU 0, wrk and upstream on CPU 1)",
        "",
        f"Load average when the run started: {args.load_before:.2f}. Keygate runs on "
        f"{python_label(sys.executable)} unless its row names another Python.",
        "",
        "| connections | target | req/s | vs nginx | p50 | p99 | p99 vs nginx | errors "
        "| CPU µs/req |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for conns in args.connections:
        ref = nginx.cells[conns]
        for row in rows:
            cell = row.cells.get(conns)
            if cell is None:
                continue
            errors = sum(r.errors for r in cell.results)
            cpu = f"{statistics.median(cell.cpu_us):.1f}" if row.pids else "-"
            lines.append(
                f"| {conns:,} | {row.name} | {cell.median('rps'):,.0f} "
                f"| {cell.median('rps') / ref.median('rps'):.2f}x "
                f"| {cell.median('p50_ms') * 1000:.0f} µs | {cell.median('p99_ms') * 1000:.0f} µs "
                f"| {cell.median('p99_ms') / ref.median('p99_ms'):.2f}x | {errors} | {cpu} |"
            )
    diy = next((r for r in rows if r.name == DIY), None)
    lines += ["", "Keygate against the others, from the medians above:", ""]
    for conns in args.connections:
        for row in rows:
            if not row.name.startswith("Keygate") or conns not in row.cells:
                continue
            cell, ref = row.cells[conns], nginx.cells[conns]
            per_core = statistics.median(ref.cpu_us) / statistics.median(cell.cpu_us)
            versus = ""
            if diy is not None:
                versus = (
                    f", {cell.median('rps') / diy.cells[conns].median('rps'):.2f}x the "
                    "requests of nginx + auth_request"
                )
            lines.append(
                f"- c={conns:,} {row.name}: {cell.median('rps') / ref.median('rps'):.2f}x "
                f"nginx proxy_pass's requests, {per_core:.2f}x per core (CPU µs per request, "
                f"nginx's over Keygate's){versus}"
            )
    if 1 in args.connections:
        direct = rows[0].cells[1]
        lines += ["", "Added latency at one connection (median of runs, over upstream direct):", ""]
        for row in rows[1:]:
            cell = row.cells[1]
            lines.append(
                f"- {row.name}: p50 +{(cell.median('p50_ms') - direct.median('p50_ms')) * 1000:.0f}"
                f" µs, p99 +{(cell.median('p99_ms') - direct.median('p99_ms')) * 1000:.0f} µs"
            )
    if memory:
        lines += ["", "Memory per cached key (`python -m bench.cache_memory`):", "", *memory]
    lines += ["", "Single runs (req/s) behind each median:", ""]
    for conns in args.connections:
        for row in rows:
            cell = row.cells.get(conns)
            if cell is not None:
                runs = ", ".join(f"{r.rps:,.0f}" for r in cell.results)
                lines.append(f"- c={conns} {row.name}: {runs}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sweep", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--connections", default="1,50,1000,5000")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--compiled", type=Path, help="a tree built by `make fast-tree`")
    parser.add_argument(
        "--interpreter",
        type=Path,
        action="append",
        default=[],
        help="also run Keygate's sources on this Python (one with Keygate's dependencies)",
    )
    parser.add_argument(
        "--busy-poll",
        type=int,
        default=0,
        metavar="US",
        help="also run each Keygate build with setting busy_poll_us at US",
    )
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the memory per cached key (~30 s)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",")]
    if not (0 < args.seconds <= 30 and 0 < args.reps <= 10) or not all(
        0 < c <= 10_000 for c in args.connections
    ):
        parser.error("keep --seconds <= 30, --reps <= 10, connections in 1..10000")
    args.load_before = os.getloadavg()[0]
    out = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out)
    print()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

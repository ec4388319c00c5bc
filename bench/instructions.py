"""Instructions per proxied request, counted by callgrind: a deterministic figure for the
CPU a request costs, unaffected by other work on the machine (wall-clock figures are not).

    python -m bench.instructions [--requests 1000] [--tree build/fast-tree]

Starts the fixed nginx upstream and `gateway serve --workers 1` (fast front) under
`valgrind --tool=callgrind --instr-atstart=no --trace-children=yes` (the master and its one
worker process), warms it up, switches the worker's instrumentation on (`callgrind_control -i
on`) around `--requests` keep-alive GETs with a valid key (verified-key cache hit) on one
connection, and prints the worker's instructions divided by the requests.
`--tree` runs Keygate from another tree (e.g. the compiled one from `make fast-tree`). Needs
valgrind and nginx. Only 127.0.0.1 is contacted; every wait is bounded.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import servers
from bench.run import PATH, gateway_env, make_key

ROOT = Path(__file__).resolve().parent.parent


def get(sock: socket.socket, request: bytes) -> None:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:80]!r}")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)


def worker_of(master: int) -> int:
    """The pid of the master's worker process (multiprocessing's spawned interpreter)."""
    for task in Path(f"/proc/{master}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise RuntimeError(f"no worker process under {master}")


def control(flag: str, pid: int) -> None:
    subprocess.run(
        ["callgrind_control", flag, str(pid)], capture_output=True, timeout=120, check=True
    )


def measure(requests: int, tree: Path) -> float:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="keygate-cg-") as tmp:
        work = Path(tmp)
        up, port = servers.free_port(), servers.free_port()
        procs = [servers.nginx_upstream(nginx, work, up)]
        try:
            env = gateway_env(work, up)
            key = make_key(env)
            proc = subprocess.Popen(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    "--trace-children=yes",  # the worker is a process of its own
                    f"--callgrind-out-file={work}/callgrind.out.%p",
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "1",
                ],
                env={**env, "GATEWAY_FAST_DATA_PLANE": "true", "PYTHONPATH": str(tree)},
                cwd=tree,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            servers.wait_port(port, proc, seconds=300)
            request = (
                f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-KEY: {key}\r\n\r\n"
            ).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                for _ in range(200):
                    get(sock, request)  # warm-up: the key is cached, the pool has its connection
                worker = worker_of(proc.pid)  # (it answered: it has started)
                control("--zero", worker)
                control("--instr=on", worker)
                for _ in range(requests):
                    get(sock, request)
                control("--instr=off", worker)
            servers.stop(proc)  # valgrind writes its counts as each process ends
            out = work / f"callgrind.out.{worker}"
            found = re.search(r"^totals: *(\d+)", out.read_text(errors="replace"), re.M)
            if found is None:
                raise RuntimeError(f"no totals in {out}")
            totals = int(found.group(1))
            return totals / requests
        finally:
            for p in reversed(procs):
                servers.stop(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--tree", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    if not 0 < args.requests <= 100_000:
        parser.error("keep --requests in 1..100000")
    per = measure(args.requests, args.tree.resolve())
    print(f"{per:,.0f} instructions per request ({args.requests} keep-alive requests, {args.tree})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

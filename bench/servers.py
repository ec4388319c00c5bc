"""The processes under test: a fixed upstream, nginx proxy_pass, Keygate. All on 127.0.0.1.

Every process is started by us, tracked by its Popen handle and stopped by that handle (TERM,
then KILL after a bounded wait); nothing is looked up or killed by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODY = '{"ok":true,"service":"bench-upstream"}\n'
STOP_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds:g}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_SECONDS)


_NGINX_COMMON = """
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 12000; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp/{name}-body;
    proxy_temp_path {work}/tmp/{name}-proxy;
    fastcgi_temp_path {work}/tmp/{name}-fastcgi;
    uwsgi_temp_path {work}/tmp/{name}-uwsgi;
    scgi_temp_path {work}/tmp/{name}-scgi;
    keepalive_requests 100000000;
    {body}
}}
"""

# Every nginx listens with backlog 1024, as Keygate does by default (`listen_backlog`):
# nginx's own default (511) drops SYNs when wrk opens 1,000 connections at once.
_UPSTREAM = """
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            default_type application/json;
            return 200 '{payload}';
        }}
    }}
"""

_PROXY = """
    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


# nginx + auth_request to a key service: the set-up a team builds instead of a gateway. Every
# request costs nginx a subrequest to the key service (kept alive) before it is proxied.
_AUTH_PROXY = """
    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    upstream keyservice {{
        server 127.0.0.1:{keys};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            auth_request /_auth;
            auth_request_set $keygate_user $upstream_http_x_user;
            proxy_set_header X-User $keygate_user;
            proxy_set_header X-API-KEY "";
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /_auth {{
            internal;
            proxy_pass http://keyservice/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    """`argv` run on CPU `cpu` (taskset; its children inherit it), or as it is for None."""
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv


def nginx(
    binary: str, work: Path, name: str, body: str, port: int, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    os.chmod(work / "tmp", 0o777)  # noqa: S103 - nginx workers may run as another user
    conf = work / f"{name}.conf"
    conf.write_text(_NGINX_COMMON.format(work=work, name=name, body=body))
    proc = subprocess.Popen(
        pinned(cpu, [binary, "-p", str(work), "-c", str(conf)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc


def nginx_upstream(
    binary: str, work: Path, port: int, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    payload = BODY.replace("\n", "\\n")
    body = _UPSTREAM.format(port=port, payload=payload)
    return nginx(binary, work, "upstream", body, port, cpu)


def nginx_proxy(
    binary: str, work: Path, port: int, upstream: int, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    return nginx(binary, work, "proxy", _PROXY.format(port=port, upstream=upstream), port, cpu)


def nginx_auth_proxy(
    binary: str, work: Path, port: int, upstream: int, keys: int, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    body = _AUTH_PROXY.format(port=port, upstream=upstream, keys=keys)
    return nginx(binary, work, "authproxy", body, port, cpu)


def key_service(
    port: int, keys: list[str], work: Path, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    """bench/keyservice.py on `port`, knowing `keys`."""
    keyfile = work / "keyservice-keys.txt"
    keyfile.write_text("".join(f"{k}\n" for k in keys))
    proc = subprocess.Popen(
        pinned(cpu, [sys.executable, "-m", "bench.keyservice", str(port), str(keyfile)]),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc


def python_upstream(port: int) -> subprocess.Popen[bytes]:
    """The fallback upstream when nginx is missing: a fixed answer from asyncio."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fixed", str(port)],
        stdout=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc


def keygate(
    env: dict[str, str],
    port: int,
    workers: int,
    *,
    python: str = sys.executable,
    tree: Path | None = None,
    cpu: int | None = None,
) -> subprocess.Popen[bytes]:
    """`gateway serve` on `port`; from another source tree (its PYTHONPATH and working
    folder) and on one CPU when asked."""
    argv = [python, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        pinned(cpu, [*argv, "--workers", str(workers)]),
        env=env if tree is None else {**env, "PYTHONPATH": str(tree)},
        cwd=tree,
        stdout=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return proc

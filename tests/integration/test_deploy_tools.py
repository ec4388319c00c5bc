"""deploy/ read and run by the real tools: nginx checks both of its configs (`nginx -t`) and then
serves them in front of a real `gateway serve`, carrying WebSockets and plain requests; systemd
checks the unit (`systemd-analyze verify`). Each config is run as shipped except for the
addresses: listen and upstream ports on 127.0.0.1, and a self-signed certificate."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy_artifacts import DEPLOY
from tests.integration.gateways import MakeGateway
from tests.integration.test_forward_websocket import _ws_upstream
from tests.integration.upstream import free_port

CONFIGS = ("nginx.conf", "nginx-tls.conf")


def nginx_binary() -> str:
    """Debian's nginx, found as the benchmarks find it; the test fails (never skips) without."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail("nginx is not installed: `make test` installs it (apt-get install -y nginx)")
    return found


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key, as files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    crt, pem = folder / "tls.crt", folder / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


def _substitute(pattern: str, replacement: str, text: str, *, at_least: int = 1) -> str:
    out, count = re.subn(pattern, replacement, text, flags=re.M)
    assert count >= at_least, f"the config no longer has {pattern!r}"
    return out


def on_loopback(name: str, folder: Path, *, listen: int, gateway: int) -> Path:
    """A main nginx.conf that includes deploy/<name>, its addresses moved to loopback ports
    (and its certificate to a self-signed one)."""
    site = (DEPLOY / name).read_text()
    site = _substitute(r"^(\s*server\s+)[\w.-]+:\d+", rf"\g<1>127.0.0.1:{gateway}", site)
    site = _substitute(r"^(\s*listen\s+)\d+", rf"\g<1>127.0.0.1:{listen}", site)
    if "ssl_certificate" in site:
        crt, key = self_signed(folder)
        site = _substitute(r"^(\s*ssl_certificate\s+)\S+;", rf"\g<1>{crt};", site)
        site = _substitute(r"^(\s*ssl_certificate_key\s+)\S+;", rf"\g<1>{key};", site)
    (folder / "site.conf").write_text(site)
    main = folder / "nginx.conf"
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main.write_text(
        f"pid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\n"
        "worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp}\n"
        f"    include {folder / 'site.conf'};\n"
        "}\n"
    )
    return main


def nginx_command(folder: Path, main: Path) -> list[str]:
    return [nginx_binary(), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(main)]


@pytest.mark.parametrize("name", CONFIGS)
def test_nginx_accepts_the_config(tmp_path: Path, name: str) -> None:
    """`nginx -t` accepts the config as shipped (addresses moved to loopback)."""
    main = on_loopback(name, tmp_path, listen=free_port(), gateway=free_port())
    result = subprocess.run(
        [*nginx_command(tmp_path, main), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@contextlib.contextmanager
def running_nginx(name: str, folder: Path, gateway: int) -> Iterator[int]:
    """nginx serving deploy/<name> in front of the gateway's port; its port. Stopped by PID."""
    port = free_port()
    main = on_loopback(name, folder, listen=port, gateway=gateway)
    proc = subprocess.Popen(
        [*nginx_command(folder, main), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.server("front", reason="deploy/ puts nginx in front of `gateway serve`")
@pytest.mark.parametrize("name", CONFIGS)
async def test_websockets_and_requests_pass_through_nginx(
    make_gateway: MakeGateway, tmp_path: Path, name: str
) -> None:
    """Through the shipped nginx config, a WebSocket route upgrades and relays messages both
    ways, and plain requests before and after it are answered."""
    upstream, _ = _ws_upstream()
    gw = await make_gateway(upstream)
    scheme = "https" if "ssl" in (DEPLOY / name).read_text() else "http"
    client_tls = False  # the certificate is self-signed: not verified
    with running_nginx(name, tmp_path, gw.port) as port:
        base = f"{scheme}://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(f"{base}/api/x", headers=gw.auth, ssl=client_tls) as got:
                    assert got.status == 200
            async with session.ws_connect(
                f"{base}/ws/echo", headers=gw.auth, protocols=("chat.v1",), ssl=client_tls
            ) as ws:
                assert ws.protocol == "chat.v1"
                await ws.send_str("through nginx")
                assert await ws.receive_str(timeout=5) == "echo:through nginx"
                await ws.send_bytes(b"\x01\x02")
                assert await ws.receive_bytes(timeout=5) == b"\x02\x01"
            async with session.get(f"{base}/api/y", headers=gw.auth, ssl=client_tls) as got:
                assert got.status == 200
            # Without a key, the gateway's answer comes back through nginx unchanged.
            async with session.get(f"{base}/api/x", ssl=client_tls) as got:
                assert got.status == 401
    assert [r.target for r in upstream.received if r.target.startswith("/api/")] == [
        "/api/x",
        "/api/x",
        "/api/x",
        "/api/y",
    ]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts deploy/keygate.service without a remark, with its
    gateway command pointed at this installation's."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed (apt-get install -y systemd)")
    gateway = Path(sys.executable).parent / "gateway"
    assert gateway.is_file(), f"no gateway command beside {sys.executable}"
    unit = (DEPLOY / "keygate.service").read_text()
    unit = _substitute(r"/opt/keygate/\.venv/bin/gateway", str(gateway), unit, at_least=2)
    path = tmp_path / "keygate.service"
    path.write_text(unit)
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr

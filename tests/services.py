"""Finding (or starting) the PostgreSQL and Redis servers the tests use.

Order: the server named by GATEWAY_TEST_DATABASE_URL / GATEWAY_TEST_REDIS_URL (defaults:
postgresql://postgres@127.0.0.1:5432/postgres and redis://127.0.0.1:6379/0); if it does not
answer, a throwaway server from local binaries (initdb/pg_ctl, redis-server); failing that,
testcontainers where Docker runs. If none works the tests that need it FAIL with the reason:
they never pass by skipping what they are there to check.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ServiceUnavailable(RuntimeError):
    pass


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise ServiceUnavailable(f"server on port {port} did not start")


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL (to its `postgres` database), for the whole test session."""
    url = os.environ.get("GATEWAY_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    if _reachable(url, 5432):
        yield url
        return
    reasons = [f"{url} does not answer"]
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb and pg_ctl:
        with _local_postgres(initdb, pg_ctl) as local:
            yield local
        return
    reasons.append("no initdb/pg_ctl binaries")
    with _container("postgres", reasons) as container_url:
        yield container_url


@contextlib.contextmanager
def _local_postgres(initdb: str, pg_ctl: str) -> Iterator[str]:
    data = tempfile.mkdtemp(prefix="keygate-pg-")
    port = _free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, initdb, "-D", data, "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            data,
            "-o",
            f"-p {port} -k {data} -h 127.0.0.1",
            "-l",
            f"{data}/log",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if _reachable(url, 6379):
        yield url
        return
    reasons = [f"{url} does not answer"]
    binary = shutil.which("redis-server")
    if binary:
        port = _free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait_port(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)
        return
    reasons.append("no redis-server binary")
    with _container("redis", reasons) as container_url:
        yield container_url


@contextlib.contextmanager
def _container(kind: str, reasons: list[str]) -> Iterator[str]:
    try:
        if kind == "postgres":
            from testcontainers.postgres import PostgresContainer

            with PostgresContainer(
                "postgres:16",
                username="postgres",
                password="postgres",
                dbname="postgres",
                driver=None,
            ) as pg:
                yield pg.get_connection_url()
        else:
            from testcontainers.redis import RedisContainer

            with RedisContainer("redis:7") as rc:
                yield f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
    except Exception as exc:  # noqa: BLE001 - report every reason together
        reasons.append(f"testcontainers: {type(exc).__name__}: {str(exc)[:200]}")
        raise ServiceUnavailable(f"no {kind} server for the tests: " + "; ".join(reasons)) from None


def database_url(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return parts._replace(path=f"/{name}").geturl()

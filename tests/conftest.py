"""Shared fixtures: real PostgreSQL and Redis, fresh databases, settings, a running app."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.services import Services, open_services
from gateway.settings import Settings
from tests import services as test_services

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = ROOT / "policies" / "example.yaml"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL server (its `postgres` database) for the whole run."""
    try:
        with test_services.postgres_server() as url:
            yield url
    except test_services.ServiceUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a Redis server for the whole run."""
    try:
        with test_services.redis_server() as url:
            yield url
    except test_services.ServiceUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture
async def pg_url(pg_server: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"keygate_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield test_services.database_url(pg_server, name)
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keygate.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs against both backends, each on a fresh database."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def redis_url(redis_server: str) -> str:
    """The Redis server, emptied before each test (tests run one at a time)."""
    client = aioredis.Redis.from_url(redis_server)
    await client.flushdb()
    await client.aclose()
    return redis_server


def make_settings(database_url: str, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": "development",
        "database_url": database_url,
        "secret": secrets.token_bytes(32),
        "secret_source": "test",
        "policy": (EXAMPLE_POLICY,),
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture
async def services(sqlite_url: str) -> AsyncIterator[Services]:
    """Services on a fresh SQLite database with the example policy."""
    async with open_services(make_settings(sqlite_url)) as s:
        yield s

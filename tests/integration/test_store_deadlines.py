"""Every store and shared-cache call keeps its deadline when the server hangs (SIGSTOP) rather
than dies, and works again once it resumes. Throwaway servers only (tests/faults.py).

Bounds are correctness bounds with generous margins (the machine may be loaded), never
speeds: without the deadlines these calls wait until the server resumes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from gateway.cache.redis import SharedCache
from gateway.store import open_store
from gateway.store.base import Store, StoreUnavailable
from gateway.store.postgres import PostgresDatabase
from tests.faults import Server, hung, throwaway_postgres, throwaway_redis
from tests.services import database_url

T = TypeVar("T")
DEADLINE = 0.5
# Deadline plus a generous allowance for a loaded machine; the server stays hung far longer.
BOUND = DEADLINE + 2.5
HANG = 3 * BOUND


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Server]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Server]:
    with throwaway_redis() as server:
        yield server


@pytest.fixture
async def pg_store(pg_server: Server) -> AsyncIterator[Store]:
    """A migrated store on a fresh database of the throwaway server, deadline 0.5 s."""
    admin = await asyncpg.connect(pg_server.url)
    name = f"deadlines_{time.monotonic_ns()}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    store = await open_store(database_url(pg_server.url, name), deadline=DEADLINE)
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


async def _fails_in_time(call: Awaitable[object], bound: float = BOUND) -> None:
    """`call` raises StoreUnavailable, within `bound` seconds."""
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        # Without a deadline the call would wait for the server: fail instead of hanging.
        await asyncio.wait_for(call, HANG)
    assert time.monotonic() - start < bound


async def _returns_in_time(call: Awaitable[T]) -> T:
    start = time.monotonic()
    result = await asyncio.wait_for(call, HANG)
    assert time.monotonic() - start < BOUND
    return result


async def _eventually(call: Callable[[], Awaitable[object]], seconds: float = 30.0) -> None:
    """`call` succeeds within `seconds` (the server resumed; pooled connections recover)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await call()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_query_on_a_hung_postgres_fails_within_the_deadline(
    pg_server: Server, pg_store: Store
) -> None:
    """A lookup on an open pooled connection to a stopped server is StoreUnavailable in time,
    and the same store answers again once the server resumes."""
    await pg_store.ping()
    with hung(pg_server):
        await _fails_in_time(pg_store.find_key_by_hash(b"\0" * 32))
        # Again while it is still hung: the first connection is being given up, a new one
        # cannot be made; still within the deadline.
        await _fails_in_time(pg_store.get_user("nobody"))
        await asyncio.sleep(HANG - 2 * BOUND)
    await _eventually(pg_store.ping)
    assert await pg_store.find_key_by_hash(b"\0" * 32) is None


async def test_taking_a_connection_from_an_exhausted_pool_has_a_deadline(
    pg_server: Server,
) -> None:
    """With every pooled connection held (by a statement stuck on the hung server), the next
    caller's acquire gives up within the deadline instead of queueing behind it."""
    db = await PostgresDatabase.connect(pg_server.url, max_size=1, deadline=DEADLINE)
    try:
        with hung(pg_server):
            stuck = asyncio.create_task(db.fetchrow("SELECT 1 AS one"))
            await asyncio.sleep(0.05)  # the stuck call holds the only connection
            await _fails_in_time(db.fetchrow("SELECT 2 AS two"))
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(stuck, HANG)
        await _eventually(lambda: db.fetchrow("SELECT 1 AS one"))
    finally:
        await db.close()


async def test_connecting_to_a_hung_postgres_fails_within_the_deadline(pg_server: Server) -> None:
    """Opening a store on a server that accepts the connection but never answers the start-up
    handshake is StoreUnavailable within the deadline."""
    with hung(pg_server):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(open_store(pg_server.url, deadline=DEADLINE), HANG)
        assert time.monotonic() - start < BOUND


async def test_a_write_on_a_hung_postgres_fails_within_its_deadlines(
    pg_server: Server, pg_store: Store
) -> None:
    """A write (alone, or a transaction of a few statements) fails within a few deadlines, not
    when the server resumes; closing the store on a hung server also returns."""
    await pg_store.ping()
    with hung(pg_server):
        await _fails_in_time(pg_store.delete_expired_sessions(_now()))
        await _fails_in_time(pg_store.touch_keys({"k1": _now()}), 4 * BOUND)
        await _returns_in_time(pg_store.close())


async def test_a_locked_sqlite_database_fails_writes_within_the_busy_deadline(
    tmp_path: Path,
) -> None:
    """Another process's write lock on the SQLite file makes a write StoreUnavailable within
    the deadline (the busy timeout), while reads go on; the write works once it is released."""
    path = f"{tmp_path}/keygate.db"
    store = await open_store(f"sqlite:///{path}", deadline=DEADLINE)
    try:
        await store.migrate()
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            await _fails_in_time(store.delete_expired_sessions(_now()))
            assert await store.get_user("nobody") is None  # WAL: readers are not blocked
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await store.delete_expired_sessions(_now())
    finally:
        await store.close()


async def test_every_shared_cache_call_on_a_hung_redis_returns_within_its_deadline(
    redis_server: Server,
) -> None:
    """get, put, invalidate, ping and close on a stopped Redis each return within the Redis
    deadline (get answers "not cached"), and the cache works again after it resumes."""
    cache = SharedCache.from_url(
        redis_server.url, ttl=60, negative_ttl=5, namespace="hung", deadline=DEADLINE
    )
    digest = b"\1" * 32
    try:
        assert await cache.ping()
        await cache.put(digest, {"key_id": "k1"})
        with hung(redis_server):
            assert await _returns_in_time(cache.get(digest)) is None
            assert not cache.available  # the back-off: later calls do not wait at all
            assert await _returns_in_time(cache.ping()) is False
            await asyncio.sleep(1.2)  # past the back-off: put tries again
            await _returns_in_time(cache.put(digest, None))
            # Not deliverable now: queued for retry, never blocking the caller.
            await _returns_in_time(cache.invalidate([digest]))
        deadline = time.monotonic() + 30
        while not await cache.ping():
            assert time.monotonic() < deadline, "Redis did not come back"
            await asyncio.sleep(0.2)
    finally:
        await _returns_in_time(cache.close())


async def test_closing_the_shared_cache_on_a_hung_redis_returns(redis_server: Server) -> None:
    """A process exiting (the CLI after a revoke) while Redis is hung is not held by it."""
    cache = SharedCache.from_url(
        redis_server.url, ttl=60, negative_ttl=5, namespace="hung2", deadline=DEADLINE
    )
    assert await cache.ping()
    with hung(redis_server):
        await cache.invalidate([b"\2" * 32])
        await _returns_in_time(cache.close())

"""PostgreSQL adapter (asyncpg pool) for the SQL store.

Deadlines: a server that hangs (stopped, or a network that drops packets) never refuses
anything, so each wait is bounded by the deadline: connecting, taking a pooled connection, each
statement (asyncpg's `command_timeout`), and giving the connection back. asyncpg's own pool
does not bound the last two by default: a statement that timed out leaves a cancellation in
flight, and releasing the connection waits for it, so a caller could wait twice the statement
timeout and more. A call outside a transaction is also bounded as a whole (`_call`), and a
connection that cannot be reset in time is closed rather than handed to the next caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg

from gateway.store.base import Conflict, StoreError, StoreUnavailable
from gateway.store.sql import Row

DEFAULT_TIMEOUT = 2.0
# Scripts are migrations (and the lock that queues instances migrating together): DDL on a
# large table, or waiting for another instance's migration, may rightly outlast a request.
SCRIPT_TIMEOUT = 600.0
POOL_MIN = 1
POOL_MAX = 10

# Errors that mean "the server is gone", as opposed to "the query was wrong".
_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError)


class _ReasonOnly(logging.Filter):
    """While the database is down, asyncpg's pool logs every reconnect attempt with a full
    traceback; keep each warning, with the reason on the same line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {_describe(record.exc_info[1])}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_ReasonOnly())


def _count(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _Conn:
    """A `Database` bound to one connection (inside a transaction)."""

    backend = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _translate():
            return list(await self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _translate():
            return await self._conn.fetchrow(sql, *args)  # type: ignore[no-any-return]

    async def execute(self, sql: str, *args: Any) -> int:
        with _translate():
            return _count(await self._conn.execute(sql, *args))

    async def run_script(self, script: str) -> None:
        with _translate():
            await self._conn.execute(script, timeout=SCRIPT_TIMEOUT)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        async with self._conn.transaction():
            yield self

    async def close(self) -> None:
        return None


class PostgresDatabase:
    backend = "postgres"

    def __init__(self, pool: asyncpg.Pool, deadline: float = DEFAULT_TIMEOUT) -> None:
        self._pool = pool
        self._deadline = deadline

    @classmethod
    async def connect(
        cls, url: str, *, max_size: int = POOL_MAX, deadline: float = DEFAULT_TIMEOUT
    ) -> PostgresDatabase:
        """A pool whose every wait is bounded by `deadline` seconds; raises StoreUnavailable."""
        try:
            # The outer bound also covers what follows the TCP connection (start-up and
            # authentication), which a hung server never answers.
            async with asyncio.timeout(deadline):
                pool = await asyncpg.create_pool(
                    url,
                    min_size=POOL_MIN,
                    max_size=max_size,
                    timeout=deadline,
                    command_timeout=deadline,
                )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {_describe(exc)}") from None
        return cls(pool, deadline)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _translate():
            async with asyncio.timeout(self._deadline), self._connection() as conn:
                return list(await conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _translate():
            async with asyncio.timeout(self._deadline), self._connection() as conn:
                return await conn.fetchrow(sql, *args)  # type: ignore[no-any-return]

    async def execute(self, sql: str, *args: Any) -> int:
        with _translate():
            async with asyncio.timeout(self._deadline), self._connection() as conn:
                return _count(await conn.execute(sql, *args))

    async def run_script(self, script: str) -> None:
        with _translate():
            async with self._connection() as conn:
                await conn.execute(script, timeout=SCRIPT_TIMEOUT)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        # Each statement inside is bounded by command_timeout; taking the connection here.
        with _translate():
            async with self._connection() as conn, conn.transaction():
                yield _Conn(conn)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, taken and given back within the deadline.

        Not `pool.acquire()` with a timeout: that wraps the wait in `wait_for` (a task per
        call on Python 3.11) and is what this already bounds. Giving back is shielded by
        asyncpg, so a caller whose deadline passed stops waiting while the connection is
        reset or closed within its own deadline in the background.
        """
        async with asyncio.timeout(self._deadline):
            conn = await self._pool.acquire()
        try:
            yield conn
        finally:
            await self._pool.release(conn, timeout=self._deadline)

    async def close(self) -> None:
        # Closing politely waits for the server to answer; a hung one gets the socket closed.
        try:
            async with asyncio.timeout(self._deadline):
                await self._pool.close()
        except (TimeoutError, *_UNAVAILABLE):
            self._pool.terminate()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


@contextmanager
def _translate() -> Iterator[None]:
    """Map driver exceptions onto the store's error tree."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(getattr(exc, "constraint_name", None) or "unique value exists") from None
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"PostgreSQL unavailable: {_describe(exc)}") from None
    except asyncpg.PostgresError as exc:
        raise StoreError(f"PostgreSQL error: {_describe(exc)}") from exc

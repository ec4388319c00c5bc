"""PostgreSQL adapter (asyncpg pool) for the SQL store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg

from gateway.store.base import Conflict, StoreError, StoreUnavailable
from gateway.store.sql import Row

CONNECT_TIMEOUT = 5.0
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
            await self._conn.execute(script)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        async with self._conn.transaction():
            yield self

    async def close(self) -> None:
        return None


class PostgresDatabase:
    backend = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, max_size: int = POOL_MAX) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(
                url, min_size=POOL_MIN, max_size=max_size, timeout=CONNECT_TIMEOUT
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {_describe(exc)}") from None
        return cls(pool)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _translate():
            return list(await self._pool.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _translate():
            return await self._pool.fetchrow(sql, *args)  # type: ignore[no-any-return]

    async def execute(self, sql: str, *args: Any) -> int:
        with _translate():
            return _count(await self._pool.execute(sql, *args))

    async def run_script(self, script: str) -> None:
        with _translate():
            await self._pool.execute(script)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        with _translate():
            async with self._pool.acquire() as conn, conn.transaction():
                yield _Conn(conn)

    async def close(self) -> None:
        await self._pool.close()


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

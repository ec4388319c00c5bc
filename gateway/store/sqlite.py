"""SQLite adapter (aiosqlite) for the SQL store: the embedded default.

SQLite has one writer; the adapter keeps a single connection and serialises every
statement through one lock, so a transaction never interleaves with another coroutine's
statements on the same connection.

Deadlines: another process holding the database's write lock (the CLI, a backup) makes
SQLite retry for its busy timeout, which is the store's deadline; a call outside a
transaction is bounded as a whole, its wait for the lock above included, so a request queued
behind a slow statement is answered (503) within the deadline instead of joining the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.store.base import Conflict, StoreError, StoreUnavailable
from gateway.store.sql import Row

DEFAULT_TIMEOUT = 2.0
_PLACEHOLDER = re.compile(r"\$(\d+)")


def _adapt_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _convert_timestamp(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode("ascii"))


sqlite3.register_adapter(datetime, _adapt_datetime)
sqlite3.register_converter("TIMESTAMPTZ", _convert_timestamp)
sqlite3.register_converter("BOOLEAN", lambda raw: raw not in (b"0", b""))


def _sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _Tx:
    """A `Database` inside an open transaction (the lock is already held)."""

    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _translate():
            async with self._conn.execute(_sql(sql), args) as cur:
                return [dict(r) for r in await cur.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with _translate():
            async with self._conn.execute(_sql(sql), args) as cur:
                row = await cur.fetchone()
        return dict(row) if row is not None else None

    async def execute(self, sql: str, *args: Any) -> int:
        with _translate():
            async with self._conn.execute(_sql(sql), args) as cur:
                return cur.rowcount

    async def run_script(self, script: str) -> None:
        # executescript() would COMMIT the open transaction; run statement by statement.
        for statement in _statements(script):
            await self.execute(statement)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        yield self

    async def close(self) -> None:
        return None


class SqliteDatabase:
    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, deadline: float = DEFAULT_TIMEOUT) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._tx = _Tx(conn)
        self._deadline = deadline

    @classmethod
    async def connect(cls, url: str, *, deadline: float = DEFAULT_TIMEOUT) -> SqliteDatabase:
        path = url.removeprefix("sqlite:///")
        if path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot open SQLite database {path!r}: cannot create its folder "
                    f"({exc.strerror or type(exc).__name__})"
                ) from None
        try:
            # Open it once synchronously first: when aiosqlite's own connect fails, its worker
            # thread later reports to a closed event loop and prints a traceback at exit.
            await asyncio.to_thread(_probe, path)
            conn = await aiosqlite.connect(
                path, detect_types=sqlite3.PARSE_DECLTYPES, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {path!r}: {exc}") from None
        conn.row_factory = sqlite3.Row
        try:
            # The first statements are where SQLite notices a file that is not a database
            # (or a read-only one); close the connection, or its thread keeps the process alive.
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA busy_timeout = {max(1, int(deadline * 1000))}")
        except sqlite3.Error as exc:
            await conn.close()
            raise StoreUnavailable(f"cannot open SQLite database {path!r}: {exc}") from None
        return cls(conn, deadline)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._turn():
            return await self._tx.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._turn():
            return await self._tx.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._turn():
            return await self._tx.execute(sql, *args)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """The connection to ourselves for one statement, within the deadline.

        A statement abandoned at its deadline still finishes in aiosqlite's thread; the next
        one queues behind it there, so statements never interleave on the connection.
        """
        try:
            async with asyncio.timeout(self._deadline), self._lock:
                yield
        except TimeoutError:
            raise self._late() from None

    async def run_script(self, script: str) -> None:
        async with self.transaction() as tx:
            await tx.run_script(script)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        # Our turn within the deadline; the statements inside are bounded by the busy timeout.
        try:
            async with asyncio.timeout(self._deadline):
                await self._lock.acquire()
        except TimeoutError:
            raise self._late() from None
        try:
            with _translate():
                await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx
                with _translate():
                    await self._conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT, which leaves the transaction open.
                with contextlib.suppress(sqlite3.Error):
                    await self._conn.execute("ROLLBACK")
                raise
        finally:
            self._lock.release()

    def _late(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"SQLite did not answer within {self._deadline:g}s (database_timeout)"
        )

    async def close(self) -> None:
        await self._conn.close()


def _probe(path: str) -> None:
    sqlite3.connect(path).close()


def _statements(script: str) -> list[str]:
    """Split a migration into statements (migrations contain no `;` inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@contextmanager
def _translate() -> Iterator[None]:
    """Map driver exceptions onto the store's error tree."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc):
            raise Conflict(str(exc)) from None
        raise StoreError(f"SQLite error: {exc}") from exc
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"SQLite error: {exc}") from None
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite error: {exc}") from exc

"""Storage: `open_store(url)` picks the backend from the database URL."""

from __future__ import annotations

from gateway.store.base import Store
from gateway.store.sql import SqlStore


async def open_store(url: str, *, deadline: float = 2.0) -> Store:
    """Connect to `sqlite:///path` or `postgresql://...`; raises StoreUnavailable.

    `deadline` bounds every wait on the database (the `database_timeout` setting).
    """
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SqliteDatabase

        return SqlStore(await SqliteDatabase.connect(url, deadline=deadline))
    from gateway.store.postgres import PostgresDatabase

    return SqlStore(await PostgresDatabase.connect(url, deadline=deadline))

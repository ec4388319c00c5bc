"""Storage: `open_store(url)` picks the backend from the database URL."""

from __future__ import annotations

from gateway.store.base import Store
from gateway.store.sql import SqlStore


async def open_store(url: str) -> Store:
    """Connect to `sqlite:///path` or `postgresql://...`; raises StoreUnavailable."""
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SqliteDatabase

        return SqlStore(await SqliteDatabase.connect(url))
    from gateway.store.postgres import PostgresDatabase

    return SqlStore(await PostgresDatabase.connect(url))

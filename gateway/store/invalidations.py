"""The invalidation log: one row per key whose cached record a change made stale.

Rows are written inside the transaction of the change (so a change that rolls back leaves
none, and one that commits cannot lose its row), read by every instance by increasing id,
and pruned once no cache can still hold what they invalidate.

On PostgreSQL a sequence hands out ids before commit, so a later id could become visible
before an earlier one and a reader moving its cursor past it would skip the earlier row
for good. Writers therefore take a transaction-scoped advisory lock first: rows commit in
id order. Changes that need a row are operator and owner actions, rare enough for that.
SQLite has a single writer, which gives the same order.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from gateway.store.base import Invalidation

if TYPE_CHECKING:
    from gateway.store.sql import Database

_LOCK = 7263042  # pg_advisory_xact_lock id; 7263041 is the migrations'


async def _lock(tx: Database) -> None:
    if tx.backend == "postgres":
        await tx.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")


async def record_key(tx: Database, key_hash: bytes, user_id: str, at: datetime) -> None:
    """Invalidate one key, in the caller's transaction."""
    await _lock(tx)
    await tx.execute(
        "INSERT INTO invalidations (key_hash, user_id, created_at) VALUES ($1, $2, $3)",
        key_hash,
        user_id,
        at,
    )


async def record_user(tx: Database, user_id: str, at: datetime) -> None:
    """Invalidate every key of a user, in the caller's transaction (a key created later is
    read after the change, so it needs no row)."""
    await _lock(tx)
    await tx.execute(
        "INSERT INTO invalidations (key_hash, user_id, created_at) "
        "SELECT key_hash, user_id, $1 FROM api_keys WHERE user_id = $2 ORDER BY id",
        at,
        user_id,
    )


class InvalidationLog:
    """The reading side, mixed into the SQL store."""

    _db: Database

    async def read_invalidations(self, after: int, limit: int) -> list[Invalidation]:
        rows = await self._db.fetch(
            "SELECT id, key_hash, user_id, created_at FROM invalidations "
            "WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [
            Invalidation(int(r["id"]), bytes(r["key_hash"]), r["user_id"], r["created_at"])
            for r in rows
        ]

    async def prune_invalidations(self, before: datetime) -> int:
        return await self._db.execute("DELETE FROM invalidations WHERE created_at < $1", before)

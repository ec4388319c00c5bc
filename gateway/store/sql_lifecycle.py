"""The SQL store's key-lifecycle bookkeeping: idle keys, the permissions keys used, and the
leak reports remembered for replay protection. A mixin of `SqlStore`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.store.base import ApiKey, Audit
from gateway.store.invalidations import record_key

if TYPE_CHECKING:
    from gateway.store.sql import Database


class LifecycleQueries:
    if TYPE_CHECKING:
        _db: Database

        @staticmethod
        async def _audit(tx: Database, audit: Audit) -> None: ...

    async def remember_report(self, digest: bytes, at: datetime, forget_before: datetime) -> bool:
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM leak_reports WHERE received_at < $1", forget_before)
            # One statement: of two instances receiving the same report, exactly one inserts.
            count = await tx.execute(
                "INSERT INTO leak_reports (digest, received_at) VALUES ($1, $2) "
                "ON CONFLICT (digest) DO NOTHING",
                digest,
                at,
            )
        return count == 1

    async def disable_idle_keys(self, unused_before: datetime) -> list[ApiKey]:
        from gateway.store.sql import _KEY_COLUMNS, _key  # sql.py imports this module

        sql = (
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE status = 'active' "  # noqa: S608 - a constant column list
            "AND COALESCE(last_used_at, created_at) < $1 ORDER BY id"
        )
        rows = await self._db.fetch(sql, unused_before)
        disabled = []
        for row in rows:
            async with self._db.transaction() as tx:
                # Guarded again: a use recorded (or a change made) since the read keeps it.
                count = await tx.execute(
                    "UPDATE api_keys SET status = 'disabled' WHERE id = $1 AND status = 'active' "
                    "AND COALESCE(last_used_at, created_at) < $2",
                    row["id"],
                    unused_before,
                )
                if count == 0:
                    continue
                since = row["last_used_at"] or row["created_at"]
                await self._audit(
                    tx,
                    Audit(
                        "system",
                        "key.idle-disable",
                        f"key:{row['id']}",
                        {"unused_since": since.isoformat()},
                    ),
                )
                await record_key(tx, bytes(row["key_hash"]), row["user_id"], datetime.now(UTC))
            disabled.append(_key(row))
        return disabled

    async def record_permission_use(self, uses: Iterable[tuple[str, str, datetime]]) -> None:
        async with self._db.transaction() as tx:
            for key_id, permission, at in uses:
                if await tx.fetchrow("SELECT 1 AS one FROM api_keys WHERE id = $1", key_id) is None:
                    continue  # deleted since the request: nothing left to narrow
                await tx.execute(
                    "INSERT INTO key_permission_use (key_id, permission, last_used_at) "
                    "VALUES ($1, $2, $3) ON CONFLICT (key_id, permission) DO UPDATE "
                    "SET last_used_at = excluded.last_used_at "
                    "WHERE key_permission_use.last_used_at < excluded.last_used_at",
                    key_id,
                    permission,
                    at,
                )

    async def permission_use(self, key_ids: Iterable[str]) -> dict[str, dict[str, datetime]]:
        ids = list(key_ids)
        out: dict[str, dict[str, datetime]] = {k: {} for k in ids}
        for key_id in ids:
            rows = await self._db.fetch(
                "SELECT permission, last_used_at FROM key_permission_use WHERE key_id = $1",
                key_id,
            )
            out[key_id] = {str(r["permission"]): r["last_used_at"] for r in rows}
        return out

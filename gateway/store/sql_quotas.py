"""The SQL store's queries about key quotas: a key's own limits and its credits.

A mixin of `SqlStore`. Changing a quota writes the key's invalidation record in the same
transaction (its limits are part of what instances cache); the balance's write-behind does
not (the balance is never cached with the key).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.store.base import Audit, KeyQuota
from gateway.store.invalidations import record_key

if TYPE_CHECKING:
    from gateway.store.sql import Database

_COLUMNS = "key_id, limits, credits, refill, refill_amount, refill_mode, period, version"


def quota_from_row(row: Any) -> KeyQuota:
    return KeyQuota(
        key_id=str(row["key_id"]),
        limits=tuple(json.loads(row["limits"])),
        credits=int(row["credits"]) if row["credits"] is not None else None,
        refill=row["refill"],
        refill_amount=int(row["refill_amount"]),
        refill_mode=row["refill_mode"],
        period=row["period"],
        version=int(row["version"]),
    )


class QuotaQueries:
    if TYPE_CHECKING:
        _db: Database

        @staticmethod
        async def _audit(tx: Database, audit: Audit) -> None: ...

    async def get_quota(self, key_id: str) -> KeyQuota | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM key_quotas WHERE key_id = $1", key_id
        )
        return quota_from_row(row) if row is not None else None

    async def set_quota(self, quota: KeyQuota, audit: Audit) -> KeyQuota:
        async with self._db.transaction() as tx:
            key = await tx.fetchrow(
                "SELECT key_hash, user_id FROM api_keys WHERE id = $1", quota.key_id
            )
            if key is None:
                raise LookupError(quota.key_id)
            old = await tx.fetchrow(
                "SELECT version FROM key_quotas WHERE key_id = $1", quota.key_id
            )
            version = int(old["version"]) + 1 if old is not None else 1
            await tx.execute("DELETE FROM key_quotas WHERE key_id = $1", quota.key_id)
            await tx.execute(
                f"INSERT INTO key_quotas ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                quota.key_id,
                json.dumps(list(quota.limits)),
                quota.credits,
                quota.refill,
                quota.refill_amount,
                quota.refill_mode,
                quota.period,
                version,
            )
            await self._audit(tx, audit)
            await record_key(tx, bytes(key["key_hash"]), str(key["user_id"]), datetime.now(UTC))
        return KeyQuota(
            quota.key_id,
            quota.limits,
            quota.credits,
            quota.refill,
            quota.refill_amount,
            quota.refill_mode,
            quota.period,
            version,
        )

    async def save_balance(
        self, key_id: str, credits: int, period: str | None, version: int
    ) -> bool:
        count = await self._db.execute(
            "UPDATE key_quotas SET credits = $1, period = $2 "
            "WHERE key_id = $3 AND version = $4 AND credits IS NOT NULL",
            credits,
            period,
            key_id,
            version,
        )
        return count > 0

    async def spend_balance(self, key_id: str, amount: int, version: int) -> bool:
        count = await self._db.execute(
            "UPDATE key_quotas SET credits = CASE WHEN credits > $1 THEN credits - $1 ELSE 0 END "
            "WHERE key_id = $2 AND version = $3 AND credits IS NOT NULL",
            amount,
            key_id,
            version,
        )
        return count > 0

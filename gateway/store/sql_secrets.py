"""The SQL store's queries about hashing secrets: which secret is current, which keys still
depend on a previous one, and re-hashing a key under the current secret.

A mixin of `SqlStore`, kept apart so the secret bookkeeping reads as one piece.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.store.base import Audit, Conflict
from gateway.store.invalidations import record_key

if TYPE_CHECKING:
    from gateway.store.sql import Database


class SecretQueries:
    if TYPE_CHECKING:
        _db: Database

        @staticmethod
        async def _audit(tx: Database, audit: Audit) -> None: ...

    async def hashing_secrets(self) -> dict[str, str]:
        rows = await self._db.fetch("SELECT fingerprint, state FROM hashing_secrets")
        return {str(r["fingerprint"]): str(r["state"]) for r in rows}

    async def adopt_secret(self, fingerprint: str, replaces: str | None, audit: Audit) -> None:
        at = datetime.now(UTC)
        async with self._db.transaction() as tx:
            if replaces is None:
                # The first secret: keys made before fingerprints were kept were made with it.
                await tx.execute(
                    "UPDATE api_keys SET secret_fingerprint = $1 WHERE secret_fingerprint IS NULL",
                    fingerprint,
                )
            else:
                retired = await tx.execute(
                    "UPDATE hashing_secrets SET state = 'retired', since = $2 "
                    "WHERE fingerprint = $1 AND state = 'current'",
                    replaces,
                    at,
                )
                if retired == 0:
                    raise Conflict("the current hashing secret changed meanwhile")
            # The one-current index turns a concurrent first start with another secret into
            # a Conflict here rather than two current secrets.
            await tx.execute(
                "INSERT INTO hashing_secrets (fingerprint, state, since) "
                "VALUES ($1, 'current', $2)",
                fingerprint,
                at,
            )
            await self._audit(tx, audit)

    async def rehash_key(
        self, key_id: str, old_hash: bytes, new_hash: bytes, fingerprint: str, audit: Audit
    ) -> bool:
        async with self._db.transaction() as tx:
            owner = await tx.fetchrow(
                "SELECT user_id FROM api_keys WHERE id = $1 AND key_hash = $2", key_id, old_hash
            )
            count = owner is not None and await tx.execute(
                "UPDATE api_keys SET key_hash = $3, secret_fingerprint = $4 "
                "WHERE id = $1 AND key_hash = $2 AND EXISTS (SELECT 1 FROM hashing_secrets "
                "WHERE fingerprint = $4 AND state = 'current')",
                key_id,
                old_hash,
                new_hash,
                fingerprint,
            )
            if count and owner is not None:
                # An instance still on the previous secret caches this key by its old hash:
                # the log tells it to drop that entry (a later revoke names only the new one).
                await record_key(tx, old_hash, owner["user_id"], datetime.now(UTC))
                await self._audit(tx, audit)
        return bool(count)

    async def count_keys_by_secret(self) -> dict[str | None, int]:
        rows = await self._db.fetch(
            "SELECT secret_fingerprint, count(*) AS n FROM api_keys GROUP BY secret_fingerprint"
        )
        return {r["secret_fingerprint"]: int(r["n"]) for r in rows}

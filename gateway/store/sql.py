"""One SQL implementation of `Store`, shared by both backends.

Queries are written once, in PostgreSQL's `$n` placeholder style; each backend's `Database`
adapter runs them (SQLite rewrites `$n` to `?n`). Only DDL differs, in the per-backend
migration folders.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from importlib import resources as pkg_resources
from typing import Any, Protocol

from gateway.store import invalidations
from gateway.store.base import (
    KEY_FIELDS,
    USER_FIELDS,
    ApiKey,
    Audit,
    AuditRecord,
    AuthorizationCode,
    KeyWithOwner,
    Resource,
    Session,
    User,
)
from gateway.store.invalidations import InvalidationLog
from gateway.store.sql_audit import AuditQueries, audit_record
from gateway.store.sql_lifecycle import LifecycleQueries
from gateway.store.sql_quotas import QuotaQueries
from gateway.store.sql_secrets import SecretQueries

Row = Mapping[str, Any]


class Database(Protocol):
    """What the SQL store needs from a driver: run `$n`-style SQL, and transactions."""

    backend: str

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def execute(self, sql: str, *args: Any) -> int: ...
    def transaction(self) -> AbstractAsyncContextManager[Database]: ...
    async def run_script(self, script: str) -> None: ...
    async def close(self) -> None: ...


def now() -> datetime:
    return datetime.now(UTC)


def _user(row: Row, prefix: str = "") -> User:
    return User(
        id=row[prefix + "id"],
        email=row[prefix + "email"],
        password_hash=row[prefix + "password_hash"],
        is_admin=bool(row[prefix + "is_admin"]),
        is_service=bool(row[prefix + "is_service"]),
        disabled=bool(row[prefix + "disabled"]),
        grants=tuple(json.loads(row[prefix + "grants"])),
        created_at=row[prefix + "created_at"],
        allowed_networks=_networks(row[prefix + "allowed_networks"]),
    )


def _networks(raw: str | None) -> tuple[str, ...] | None:
    return None if raw is None else tuple(json.loads(raw))


def _key(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        key_hash=bytes(row["key_hash"]),
        user_id=row["user_id"],
        label=row["label"],
        permissions=tuple(json.loads(row["permissions"])),
        path_rule=row["path_rule"],
        status=row["status"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        application_identifier=row["application_identifier"],
        redirect_origin=row["redirect_origin"],
        encrypted_key=bytes(row["encrypted_key"]) if row["encrypted_key"] is not None else None,
        secret_fingerprint=row["secret_fingerprint"],
        legacy=row["legacy"],
        replaced_by=row["replaced_by"],
        allowed_networks=_networks(row["allowed_networks"]),
        leaked_at=row["leaked_at"],
        leak_source=row["leak_source"],
    )


def _db_value(field: str, value: Any) -> Any:
    if field in {"grants", "permissions"}:
        return json.dumps(list(value))
    if field == "allowed_networks":
        return None if value is None else json.dumps(list(value))
    return value


_USER_COLUMNS = (
    "id, email, password_hash, is_admin, is_service, disabled, grants, created_at, allowed_networks"
)
_KEY_COLUMNS = (
    "id, key_hash, user_id, label, permissions, path_rule, status, created_at, expires_at, "
    "last_used_at, application_identifier, redirect_origin, encrypted_key, secret_fingerprint, "
    "legacy, replaced_by, allowed_networks, leaked_at, leak_source"
)
_CODE_COLUMNS = (
    "code_hash, user_id, permissions, label, application_identifier, redirect_origin, "
    "code_challenge, replace_key_id, created_at, expires_at"
)


class SqlStore(InvalidationLog, SecretQueries, QuotaQueries, AuditQueries, LifecycleQueries):
    """`Store` over any `Database` adapter."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.backend = db.backend

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        await self._db.fetchrow("SELECT 1 AS one")

    # -- migrations ---------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply every migration not yet applied, in order; returns the versions applied.

        One transaction per migration. On PostgreSQL every step (the bookkeeping table
        included) first takes an advisory lock, so instances starting together on a fresh
        database queue up instead of racing on CREATE TABLE.
        """
        async with self._db.transaction() as tx:
            await self._lock(tx)
            await tx.run_script(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
            )
        applied: list[int] = []
        for version, name, script in _migrations(self.backend):
            async with self._db.transaction() as tx:
                await self._lock(tx)
                done = await tx.fetchrow(
                    "SELECT version FROM schema_migrations WHERE version = $1", version
                )
                if done is not None:
                    continue
                await tx.run_script(script)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
                applied.append(version)
        return applied

    async def _lock(self, tx: Database) -> None:
        if self.backend == "postgres":
            # A script: waiting for another instance's migration is not bounded like a query.
            await tx.run_script("SELECT pg_advisory_xact_lock(7263041)")

    # -- audit --------------------------------------------------------------------------

    @staticmethod
    async def _audit(tx: Database, audit: Audit) -> None:
        subject = audit.subject_user
        if subject is None and audit.target.startswith("user:"):
            subject = audit.target[len("user:") :]
        # A key's owner is read in the change's transaction (before a deletion, see
        # delete_key), so the entry stays his after the key is gone.
        await tx.execute(
            "INSERT INTO audit_log (at, actor, action, target, detail, subject_user) "
            "VALUES ($1, $2, $3, $4, $5, COALESCE($6, "
            "(SELECT user_id FROM api_keys WHERE 'key:' || id = $4)))",
            now(),
            audit.actor,
            audit.action,
            audit.target,
            json.dumps(dict(audit.detail), sort_keys=True),
            subject,
        )

    async def add_audit(self, audit: Audit) -> None:
        async with self._db.transaction() as tx:
            await self._audit(tx, audit)

    async def list_audit(self, limit: int = 100, target: str | None = None) -> list[AuditRecord]:
        if target is None:
            rows = await self._db.fetch(
                "SELECT id, at, actor, action, target, detail, subject_user FROM audit_log "
                "ORDER BY id DESC LIMIT $1",
                limit,
            )
        else:
            rows = await self._db.fetch(
                "SELECT id, at, actor, action, target, detail, subject_user FROM audit_log "
                "WHERE target = $1 ORDER BY id DESC LIMIT $2",
                target,
                limit,
            )
        return [audit_record(r) for r in rows]

    # -- users --------------------------------------------------------------------------

    async def create_user(self, user: User, audit: Audit) -> User:
        async with self._db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                user.id,
                user.email,
                user.password_hash,
                user.is_admin,
                user.is_service,
                user.disabled,
                json.dumps(list(user.grants)),
                user.created_at,
                _db_value("allowed_networks", user.allowed_networks),
            )
            await self._audit(tx, audit)
        return user

    async def get_user(self, user_id: str) -> User | None:
        row = await self._db.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return _user(row) if row else None

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self._db.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE lower(email) = lower($1)", email
        )
        return _user(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._db.fetch(f"SELECT {_USER_COLUMNS} FROM users ORDER BY email")
        return [_user(r) for r in rows]

    async def update_user(
        self, user_id: str, changes: Mapping[str, Any], audit: Audit
    ) -> User | None:
        # A password is not part of what a key's cached record holds; anything else is.
        stale = set(changes) - {"password_hash"}
        row = await self._update(
            "users",
            _USER_COLUMNS,
            USER_FIELDS,
            user_id,
            changes,
            audit,
            _invalidate_user if stale else None,
        )
        return _user(row) if row else None

    async def _update(
        self,
        table: str,
        columns: str,
        allowed: frozenset[str],
        row_id: str,
        changes: Mapping[str, Any],
        audit: Audit,
        invalidate: Callable[[Database, Row], Awaitable[None]] | None = None,
    ) -> Row | None:
        """Update one row by id, audit it and (given `invalidate`) write its invalidation
        records, in one transaction; the row after, or None."""
        sets, args = _assignments(changes, allowed)
        async with self._db.transaction() as tx:
            count = await tx.execute(
                f"UPDATE {table} SET {sets} WHERE id = ${len(args) + 1}", *args, row_id
            )
            if count == 0:
                return None
            await self._audit(tx, audit)
            row = await tx.fetchrow(f"SELECT {columns} FROM {table} WHERE id = $1", row_id)
            if row is not None and invalidate is not None:
                await invalidate(tx, row)
            return row

    # -- resources ----------------------------------------------------------------------

    async def put_resource(self, resource: Resource, audit: Audit) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO resources (type, id, name) VALUES ($1, $2, $3) "
                "ON CONFLICT (type, id) DO UPDATE SET name = excluded.name",
                resource.type,
                resource.id,
                resource.name,
            )
            await self._audit(tx, audit)

    async def list_resources(self, type_: str | None = None) -> list[Resource]:
        if type_ is None:
            rows = await self._db.fetch("SELECT type, id, name FROM resources ORDER BY type, id")
        else:
            rows = await self._db.fetch(
                "SELECT type, id, name FROM resources WHERE type = $1 ORDER BY id", type_
            )
        return [Resource(r["type"], r["id"], r["name"]) for r in rows]

    async def delete_resource(self, type_: str, id_: str, audit: Audit) -> bool:
        async with self._db.transaction() as tx:
            count = await tx.execute(
                "DELETE FROM resources WHERE type = $1 AND id = $2", type_, id_
            )
            if count:
                await self._audit(tx, audit)
        return count > 0

    # -- keys ---------------------------------------------------------------------------

    async def create_key(self, key: ApiKey, audit: Audit) -> None:
        async with self._db.transaction() as tx:
            await self._insert_key(tx, key)
            await self._audit(tx, audit)

    @staticmethod
    async def _insert_key(tx: Database, key: ApiKey) -> None:
        await tx.execute(
            f"INSERT INTO api_keys ({_KEY_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
            "$17, $18, $19)",
            key.id,
            key.key_hash,
            key.user_id,
            key.label,
            json.dumps(list(key.permissions)),
            key.path_rule,
            key.status,
            key.created_at,
            key.expires_at,
            key.last_used_at,
            key.application_identifier,
            key.redirect_origin,
            key.encrypted_key,
            key.secret_fingerprint,
            key.legacy,
            key.replaced_by,
            _db_value("allowed_networks", key.allowed_networks),
            key.leaked_at,
            key.leak_source,
        )

    async def replace_key(
        self, new: ApiKey, old_id: str, old_expires_at: datetime, audits: Sequence[Audit]
    ) -> ApiKey | None:
        async with self._db.transaction() as tx:
            count = await tx.execute(
                "UPDATE api_keys SET expires_at = $1, replaced_by = $2 "
                "WHERE id = $3 AND replaced_by IS NULL",
                old_expires_at,
                new.id,
                old_id,
            )
            if count == 0:
                return None
            await self._insert_key(tx, new)
            # The successor carries the key's own limits and its credits: the balance moves
            # (the old key keeps its limits and has no credits left during the grace).
            await tx.execute(
                "INSERT INTO key_quotas (key_id, limits, credits, refill, refill_amount, "
                "refill_mode, period, version) SELECT $1, limits, credits, refill, "
                "refill_amount, refill_mode, period, 1 FROM key_quotas WHERE key_id = $2",
                new.id,
                old_id,
            )
            await tx.execute(
                "UPDATE key_quotas SET credits = 0, refill = NULL, version = version + 1 "
                "WHERE key_id = $1 AND credits IS NOT NULL",
                old_id,
            )
            for audit in audits:
                await self._audit(tx, audit)
            row = await tx.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", old_id)
            assert row is not None  # updated above, in this transaction
            await _invalidate_key(tx, row)
        return _key(row)

    async def find_key_by_hash(self, key_hash: bytes) -> KeyWithOwner | None:
        owner_cols = ", ".join(f"u.{c.strip()} AS u_{c.strip()}" for c in _USER_COLUMNS.split(","))
        key_cols = ", ".join(f"k.{c.strip()}" for c in _KEY_COLUMNS.split(","))
        # The version is read in the same statement, hence the same snapshot, as the record.
        row = await self._db.fetchrow(
            f"SELECT {key_cols}, {owner_cols}, "
            "(SELECT COALESCE(MAX(i.id), 0) FROM invalidations i WHERE i.key_hash = $1) "
            "AS version, q.limits AS q_limits, q.credits AS q_credits "
            "FROM api_keys k JOIN users u ON u.id = k.user_id "
            "LEFT JOIN key_quotas q ON q.key_id = k.id "
            "WHERE k.key_hash = $1",
            key_hash,
        )
        if row is None:
            return None
        limits = tuple(json.loads(row["q_limits"])) if row["q_limits"] is not None else ()
        return KeyWithOwner(
            _key(row),
            _user(row, "u_"),
            int(row["version"]),
            limits=limits,
            metered=row["q_credits"] is not None,
        )

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._db.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return _key(row) if row else None

    async def list_keys(self, user_id: str) -> list[ApiKey]:
        rows = await self._db.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at, id",
            user_id,
        )
        return [_key(r) for r in rows]

    async def update_key(
        self, key_id: str, changes: Mapping[str, Any], audit: Audit
    ) -> ApiKey | None:
        row = await self._update(
            "api_keys", _KEY_COLUMNS, KEY_FIELDS, key_id, changes, audit, _invalidate_key
        )
        return _key(row) if row else None

    async def delete_key(self, key_id: str, audit: Audit) -> ApiKey | None:
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
            if row is None:
                return None
            await self._audit(tx, audit)  # first: it reads the key's owner
            await tx.execute("DELETE FROM api_keys WHERE id = $1", key_id)
            await _invalidate_key(tx, row)
        return _key(row)

    async def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
        """Record last-used times in one batch (called periodically, not per request)."""
        if not last_used:
            return
        async with self._db.transaction() as tx:
            for key_id, at in last_used.items():
                await tx.execute(
                    "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 "
                    "AND (last_used_at IS NULL OR last_used_at < $1)",
                    at,
                    key_id,
                )

    # -- sessions and authorization codes (hosted pages) ---------------------------------

    async def create_session(self, session: Session, audit: Audit) -> None:
        async with self._db.transaction() as tx:
            # Housekeeping on login keeps the table small without a background job.
            await tx.execute("DELETE FROM sessions WHERE expires_at < $1", now())
            await tx.execute(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) "
                "VALUES ($1, $2, $3, $4)",
                session.token_hash,
                session.user_id,
                session.created_at,
                session.expires_at,
            )
            await self._audit(tx, audit)

    async def get_session(self, token_hash: bytes) -> Session | None:
        row = await self._db.fetchrow(
            "SELECT token_hash, user_id, created_at, expires_at FROM sessions "
            "WHERE token_hash = $1",
            token_hash,
        )
        if row is None:
            return None
        return Session(
            bytes(row["token_hash"]), row["user_id"], row["created_at"], row["expires_at"]
        )

    async def delete_session(self, token_hash: bytes, audit: Audit | None = None) -> bool:
        async with self._db.transaction() as tx:
            count = await tx.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)
            if count and audit is not None:
                await self._audit(tx, audit)
        return count > 0

    async def delete_expired_sessions(self, before: datetime) -> int:
        return await self._db.execute("DELETE FROM sessions WHERE expires_at < $1", before)

    async def create_authorization_code(self, code: AuthorizationCode, audit: Audit) -> None:
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM authorization_codes WHERE expires_at < $1", now())
            await tx.execute(
                f"INSERT INTO authorization_codes ({_CODE_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                code.code_hash,
                code.user_id,
                json.dumps(list(code.permissions)),
                code.label,
                code.application_identifier,
                code.redirect_origin,
                code.code_challenge,
                code.replace_key_id,
                code.created_at,
                code.expires_at,
            )
            await self._audit(tx, audit)

    async def consume_authorization_code(self, code_hash: bytes) -> AuthorizationCode | None:
        # One DELETE ... RETURNING: the row lock (PostgreSQL) or the single writer (SQLite)
        # lets exactly one of two concurrent redeemers see the row. Expiry is the caller's
        # check, so an expired code is still used up.
        row = await self._db.fetchrow(
            f"DELETE FROM authorization_codes WHERE code_hash = $1 RETURNING {_CODE_COLUMNS}",
            code_hash,
        )
        if row is None:
            return None
        return AuthorizationCode(
            code_hash=bytes(row["code_hash"]),
            user_id=row["user_id"],
            permissions=tuple(json.loads(row["permissions"])),
            label=row["label"],
            application_identifier=row["application_identifier"],
            redirect_origin=row["redirect_origin"],
            code_challenge=row["code_challenge"],
            replace_key_id=row["replace_key_id"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )


async def _invalidate_key(tx: Database, row: Row) -> None:
    await invalidations.record_key(tx, bytes(row["key_hash"]), row["user_id"], now())


async def _invalidate_user(tx: Database, row: Row) -> None:
    await invalidations.record_user(tx, row["id"], now())


def _assignments(changes: Mapping[str, Any], allowed: frozenset[str]) -> tuple[str, list[Any]]:
    unknown = set(changes) - allowed
    if unknown or not changes:
        raise ValueError(f"cannot update fields {sorted(unknown) or 'none'}")
    names = sorted(changes)  # column names come from the allow-list, never from input
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, 1))
    return sets, [_db_value(name, changes[name]) for name in names]


def _migrations(backend: str) -> Sequence[tuple[int, str, str]]:
    folder = pkg_resources.files("gateway.store") / "migrations" / backend
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return out

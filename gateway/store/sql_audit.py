"""The SQL store's audit-log reading: filtered, newest first, paged by entry id.

A mixin of `SqlStore`. Filters are ANDed; `before` (the cursor) is the id of the last entry
of the previous page, so a page never shifts when new entries are written meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.store.base import AuditQuery, AuditRecord

if TYPE_CHECKING:
    from gateway.store.sql import Database

_COLUMNS = "id, at, actor, action, target, detail, subject_user"


def audit_record(row: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(
        id=int(row["id"]),
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        detail=json.loads(row["detail"]),
        subject_user=row["subject_user"],
    )


class AuditQueries:
    if TYPE_CHECKING:
        _db: Database

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        conditions: list[str] = []
        args: list[Any] = []
        for column, op, value in (
            ("actor", "=", query.actor),
            ("subject_user", "=", query.subject_user),
            ("target", "=", query.target),
            ("action", "=", query.action),
            ("at", ">=", query.since),
            ("at", "<", query.until),
            ("id", "<", query.before),
        ):
            if value is not None:
                args.append(value)
                # Column names and operators come from the table above, never from input.
                conditions.append(f"{column} {op} ${len(args)}")
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        args.append(query.limit)
        sql = f"SELECT {_COLUMNS} FROM audit_log {where}ORDER BY id DESC LIMIT ${len(args)}"  # noqa: S608 - only constants and placeholders are interpolated
        rows = await self._db.fetch(sql, *args)
        return [audit_record(r) for r in rows]

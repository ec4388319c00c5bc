"""BTCPay data from its PostgreSQL database, read in one read-only snapshot.

BTCPay's EF Core model (`BTCPayServer.Data`): `ApiKeys` (`Id` is the key itself, `UserId`,
`Label`, `Type`, the blob `{"permissions": [...], "applicationIdentifier",
"applicationAuthority"}` in `Blob2` (JSONB), or in the older `Blob` (bytea: UTF-8 JSON, or
gzipped)), `AspNetUsers` (`Id`, `Email`), `AspNetUserRoles`/`AspNetRoles` (`ServerAdmin`),
`Stores` (`Id`, `StoreName`), `UserStore` (`ApplicationUserId`, `StoreDataId`, `Role`: a
`StoreRoles.Id`) and `StoreRoles` (`Permissions`, text[]). Nothing is written there: the
transaction is read-only.
"""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.importer.source import (
    DEFAULT_ROLES,
    Membership,
    Problem,
    Source,
    SourceKey,
    SourceUser,
)

# APIKeyType: 0 "Legacy" keys belong to a store's BitPay-compatible API, not to Greenfield.
PERMANENT = 1
ADMIN_ROLE = "ServerAdmin"
# A lockout ending after this is BTCPay's "disabled" (a failed-login lockout lasts minutes).
FOREVER = datetime(9000, 1, 1, tzinfo=UTC)


class SourceUnavailable(Exception):
    """BTCPay's database cannot be read; the message says why in one line, without secrets."""


def redacted(url: str) -> str:
    """The URL without its password, for messages and the summary."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def read_database(url: str, deadline: float) -> Source:
    try:
        conn = await asyncpg.connect(url, timeout=deadline, command_timeout=deadline * 10)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise SourceUnavailable(f"cannot connect to {redacted(url)}: {_why(exc)}") from None
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            return await _read(conn, redacted(url))
    except asyncpg.UndefinedTableError as exc:
        raise SourceUnavailable(
            f"{redacted(url)} does not look like BTCPay Server's database ({exc.message})"
        ) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise SourceUnavailable(f"reading {redacted(url)}: {_why(exc)}") from None
    finally:
        await conn.close(timeout=deadline)


def _why(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0]


async def _read(conn: Any, description: str) -> Source:
    admins = {
        r["UserId"]
        for r in await conn.fetch(
            'SELECT ur."UserId" FROM "AspNetUserRoles" ur '
            'JOIN "AspNetRoles" r ON r."Id" = ur."RoleId" WHERE r."Name" = $1',
            ADMIN_ROLE,
        )
    }
    # BTCPay disables a user by locking him out until the end of time (LockoutEnd = max).
    users = {
        r["Id"]: SourceUser(r["Id"], r["Email"], r["Id"] in admins, r["disabled"])
        for r in await conn.fetch(
            'SELECT "Id", "Email", COALESCE("LockoutEnd" > $1, false) AS disabled '
            'FROM "AspNetUsers"',
            FOREVER,
        )
    }
    stores = {
        r["Id"]: r["StoreName"] or r["Id"]
        for r in await conn.fetch('SELECT "Id", "StoreName" FROM "Stores"')
    }
    has_roles = await conn.fetchval("SELECT to_regclass('\"StoreRoles\"') IS NOT NULL")
    if has_roles:
        rows = await conn.fetch(
            'SELECT us."ApplicationUserId", us."StoreDataId", us."Role", '
            'sr."Role" AS "RoleName", sr."Permissions" FROM "UserStore" us '
            'LEFT JOIN "StoreRoles" sr ON sr."Id" = us."Role"'
        )
    else:  # BTCPay before 1.10: the role is a name
        rows = await conn.fetch(
            'SELECT "ApplicationUserId", "StoreDataId", "Role", "Role" AS "RoleName", '
            'NULL::text[] AS "Permissions" FROM "UserStore"'
        )
    members = []
    for r in rows:
        name = r["RoleName"] or r["Role"] or ""
        perms = r["Permissions"]
        members.append(
            Membership(
                r["ApplicationUserId"],
                r["StoreDataId"],
                name,
                tuple(perms) if perms is not None else DEFAULT_ROLES.get(name),
            )
        )
    keys: list[SourceKey] = []
    problems: list[Problem] = []
    rows = await conn.fetch(
        'SELECT "Id", "UserId", "Label", "Type", "Blob", "Blob2"::text AS "Blob2" '
        'FROM "ApiKeys" ORDER BY "UserId", "Label", "Id"'
    )
    for n, r in enumerate(rows, 1):
        where = f"ApiKeys #{n}"
        owner = users.get(r["UserId"] or "")
        email, label = (owner.email if owner else None), r["Label"]
        if r["Type"] != PERMANENT:
            problems.append(
                Problem(
                    where,
                    "a store's BitPay-compatible legacy key, not a Greenfield key",
                    email,
                    label,
                )
            )
            continue
        blob = _blob(r["Blob2"], r["Blob"])
        if isinstance(blob, str):
            problems.append(Problem(where, blob, email, label))
            continue
        perms = _member(blob, "permissions")
        if perms is not None and not isinstance(perms, list):
            problems.append(Problem(where, "the key's permissions are not a list", email, label))
            continue
        app, authority = (
            _member(blob, "applicationIdentifier"),
            _member(blob, "applicationAuthority"),
        )
        keys.append(
            SourceKey(
                row=where,
                text=r["Id"],
                user_id=r["UserId"],
                label=r["Label"] or "",
                permissions=tuple(perms or ()),
                application_identifier=app if isinstance(app, str) else None,
                application_authority=authority if isinstance(authority, str) else None,
            )
        )
    return Source(description, users, stores, tuple(members), tuple(keys), tuple(problems))


def _blob(blob2: str | None, blob: bytes | None) -> dict[str, Any] | str:
    """The key's blob as a JSON object, or why it cannot be read (BTCPay's GetBlob)."""
    try:
        if blob2 is not None:
            text = blob2
        elif blob:
            text = blob.decode("utf-8") if blob[:1] == b"{" else gzip.decompress(blob).decode()
        else:
            return {}  # no blob: a key without permissions
        value = json.loads(text)
    except (ValueError, OSError, EOFError, zlib.error):
        return "the key's permissions blob cannot be read"
    return value if isinstance(value, dict) else "the key's permissions blob is not an object"


def _member(blob: dict[str, Any], name: str) -> object:
    """A blob member by name, ignoring case as BTCPay's JSON reader does."""
    for key, value in blob.items():
        if key.lower() == name.lower():
            return value
    return None

"""BTCPay data from a JSON export (the README documents the format). Pure; no I/O.

::

    {"format": "btcpay-export", "version": 1,
     "users":      [{"id": "u1", "email": "owner@example.com", "admin": false,
                     "disabled": false}],
     "stores":     [{"id": "S1", "name": "Main shop"}],
     "storeUsers": [{"userId": "u1", "storeId": "S1", "role": "Owner",
                     "permissions": ["btcpay.store.canmodifystoresettings"]}],
     "apiKeys":    [{"key": "<40 hex>", "userId": "u1", "label": "shop",
                     "permissions": ["btcpay.store.canviewinvoices:S1"],
                     "applicationIdentifier": null, "applicationAuthority": null}]}

Names follow BTCPay's own (its blobs are camelCase JSON). `storeUsers[].permissions` may be
left out for BTCPay's built-in roles (Owner, Manager, Employee, Guest). A file that is not
such a document is an `ExportError`; a row that cannot be read is a `Problem` and the other
rows are still imported.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.importer.source import (
    DEFAULT_ROLES,
    Membership,
    Problem,
    Source,
    SourceKey,
    SourceUser,
)

FORMAT = "btcpay-export"
VERSION = 1
MAX_EXPORT_BYTES = 64 * 1024 * 1024


class ExportError(ValueError):
    """The export as a whole cannot be read; the message says why in one line."""


def read_export(raw: bytes, description: str) -> Source:
    if len(raw) > MAX_EXPORT_BYTES:
        raise ExportError(f"{description}: larger than {MAX_EXPORT_BYTES // 2**20} MiB")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ExportError(f"{description}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"{description}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ExportError(f'{description}: not a BTCPay export (no "format": "{FORMAT}")')
    if doc.get("version") != VERSION:
        raise ExportError(f"{description}: export version {doc.get('version')!r} (1 is read)")
    problems: list[Problem] = []
    users: dict[str, SourceUser] = {}
    for where, row in _rows(doc, "users", problems):
        uid, email = _text(row, "id"), row.get("email")
        if uid is None:
            problems.append(Problem(where, "the user has no id"))
        elif email is not None and not isinstance(email, str):
            problems.append(Problem(where, "the email must be a string"))
        elif uid in users:
            problems.append(Problem(where, f"a second user with id {uid!r}"))
        else:
            users[uid] = SourceUser(
                uid, email, row.get("admin") is True, row.get("disabled") is True
            )
    stores: dict[str, str] = {}
    for where, row in _rows(doc, "stores", problems):
        sid = _text(row, "id")
        if sid is None:
            problems.append(Problem(where, "the store has no id"))
        else:
            name = row.get("name")
            stores[sid] = name if isinstance(name, str) and name.strip() else sid
    members: list[Membership] = []
    for where, row in _rows(doc, "storeUsers", problems):
        member = _membership(row)
        if isinstance(member, str):
            problems.append(Problem(where, member))
        else:
            members.append(member)
    keys: list[SourceKey] = []
    for where, row in _rows(doc, "apiKeys", problems):
        key = _key(where, row)
        if isinstance(key, str):
            label = row.get("label")
            problems.append(Problem(where, key, None, label if isinstance(label, str) else None))
        else:
            keys.append(key)
    return Source(description, users, stores, tuple(members), tuple(keys), tuple(problems))


def _rows(
    doc: dict[str, Any], name: str, problems: list[Problem]
) -> list[tuple[str, dict[str, Any]]]:
    items = doc.get(name, [])
    if not isinstance(items, list):
        problems.append(Problem(name, f'"{name}" must be a list'))
        return []
    out = []
    for i, row in enumerate(items):
        if isinstance(row, dict):
            out.append((f"{name}[{i}]", row))
        else:
            problems.append(Problem(f"{name}[{i}]", "not a JSON object"))
    return out


def _text(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    return value if isinstance(value, str) and value.strip() else None


def _membership(row: dict[str, Any]) -> Membership | str:
    user_id, store_id, role = _text(row, "userId"), _text(row, "storeId"), _text(row, "role")
    if user_id is None or store_id is None:
        return "a store user needs userId and storeId"
    raw = row.get("permissions")
    if raw is None:
        permissions = DEFAULT_ROLES.get(role or "")
    elif isinstance(raw, list) and all(isinstance(p, str) for p in raw):
        permissions = tuple(raw)
    else:
        return "the role's permissions must be a list of strings"
    return Membership(user_id, store_id, role or "", permissions)


def _key(where: str, row: dict[str, Any]) -> SourceKey | str:
    text = row.get("key")
    if not isinstance(text, str):
        return "the key is missing or not a string"
    user_id = row.get("userId")
    label = row.get("label")
    perms = row.get("permissions")
    if perms is None:
        perms = []
    if not isinstance(perms, list):
        return "permissions must be a list"
    app, authority = row.get("applicationIdentifier"), row.get("applicationAuthority")
    return SourceKey(
        row=where,
        text=text,
        user_id=user_id if isinstance(user_id, str) else None,
        label=label if isinstance(label, str) else "",
        permissions=tuple(perms),
        application_identifier=app if isinstance(app, str) else None,
        application_authority=authority if isinstance(authority, str) else None,
    )

"""Request bodies and response shapes of the key-lifecycle endpoints. Pure.

* `POST /v1/apikeys/{id}/rotate` `{grace?, scopes?}`: `grace` is `immediate` (the default),
  a number of seconds, or a duration such as `1h` (at most 7 days); `scopes` (space-separated,
  a subset of the key's) narrows the new key.
* Audit queries: `actor`, `user`, `key`, `action`, `since`, `until` (ISO 8601), `cursor` (from
  the previous page's `nextCursor`) and `limit`; entries never show a member whose name says
  it could hold a secret, whatever wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.api.schemas import _object, _raise, iso, v1_key
from gateway.errors import Invalid
from gateway.keys import idle, rotation
from gateway.keys.manage import NewKey
from gateway.keys.usage import PermissionUse
from gateway.settings import Settings
from gateway.store.base import ApiKey, AuditRecord
from gateway.text import encodable

DEFAULT_AUDIT_LIMIT = 50
MAX_AUDIT_LIMIT = 200
AUDIT_FILTERS = ("actor", "user", "key", "action", "since", "until", "cursor", "limit")
MAX_FILTER = 320
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SECRET_NAME = re.compile(r"password|hash|secret|token|apikey|key_text", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RotateRequest:
    grace: timedelta
    permissions: tuple[str, ...] | None  # None: keep every permission
    narrow: bool = False  # keep only the permissions used lately (least privilege)


def rotate_request(body: object) -> RotateRequest:
    data, errors = _object(body, optional=("grace", "scopes", "narrow"))
    narrow = data.get("narrow", False)
    if not isinstance(narrow, bool):
        errors.append(("narrow", "must be true or false"))
    elif narrow and data.get("scopes") is not None:
        errors.append(("narrow", "send scopes or narrow, not both"))
    grace = timedelta(0)
    if "grace" in data:
        try:
            grace = rotation.parse_grace(data["grace"])
        except ValueError as exc:
            errors.append(("grace", str(exc)))
    scopes = data.get("scopes")
    if scopes is not None and not isinstance(scopes, str):
        errors.append(("scopes", "must be a string of space-separated scopes, or null"))
    _raise(errors)
    return RotateRequest(
        grace, tuple(scopes.split()) if isinstance(scopes, str) else None, narrow is True
    )


def rotated(new: NewKey) -> dict[str, Any]:
    """The new key (shown this once) and when the key it replaced stops."""
    body = v1_key(new.record, new.text)
    if new.previous is not None:
        body["previous"] = {
            "id": new.previous.id,
            "expiresAt": iso(new.previous.expires_at),
        }
    return body


@dataclass(frozen=True, slots=True)
class AuditParams:
    """An audit query as sent; `user` and `key` are resolved by the caller."""

    actor: str | None = None
    user: str | None = None
    key: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: int | None = None
    limit: int = DEFAULT_AUDIT_LIMIT


def audit_params(query: Mapping[str, str], allowed: tuple[str, ...] = AUDIT_FILTERS) -> AuditParams:
    """The query string's filters; Invalid naming each bad or unknown one."""
    errors: list[tuple[str, str]] = [
        (name, f"unknown filter (allowed: {', '.join(allowed)})")
        for name in query
        if name not in allowed
    ]
    errors += [
        (name, "must not be empty") for name in allowed if name in query and not query[name].strip()
    ]
    text = {name: query[name].strip() for name in allowed if query.get(name, "").strip()}
    for name, value in list(text.items()):
        if len(value) > MAX_FILTER or not encodable(value) or _CONTROL.search(value):
            errors.append((name, f"at most {MAX_FILTER} printable characters"))
            del text[name]

    def moment(name: str) -> datetime | None:
        if name not in text:
            return None
        try:
            value = datetime.fromisoformat(text[name].replace("Z", "+00:00"))
        except ValueError:
            errors.append((name, "expected an ISO 8601 time such as 2026-12-07T10:00:00Z"))
            return None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def number(name: str, low: int, high: int) -> int | None:
        if name not in text:
            return None
        raw = text[name]
        if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
            errors.append((name, f"expected a whole number from {low} to {high}"))
            return None
        return int(raw)

    params = AuditParams(
        actor=text.get("actor"),
        user=text.get("user"),
        key=text.get("key"),
        action=text.get("action"),
        since=moment("since"),
        until=moment("until"),
        cursor=number("cursor", 1, 2**62),
        limit=number("limit", 1, MAX_AUDIT_LIMIT) or DEFAULT_AUDIT_LIMIT,
    )
    if errors:
        raise Invalid(errors[:20])
    return params


def audit_entry(record: AuditRecord) -> dict[str, Any]:
    """One entry as the APIs show it."""
    return {
        "id": record.id,
        "at": iso(record.at),
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "subjectUser": record.subject_user,
        "detail": {k: v for k, v in record.detail.items() if not _SECRET_NAME.search(k)},
    }


def audit_page(records: list[AuditRecord], limit: int) -> dict[str, Any]:
    """A page of entries, newest first, and the cursor of the next page (null: the last)."""
    more = len(records) > limit
    shown = records[:limit]
    return {
        "items": [audit_entry(r) for r in shown],
        "nextCursor": str(shown[-1].id) if more and shown else None,
    }


def usage_view(key: ApiKey, uses: tuple[PermissionUse, ...], settings: Settings) -> dict[str, Any]:
    """Least privilege for one key: last use per permission, and the unused ones."""
    return {
        "id": key.id,
        "unusedForDays": settings.unused_permission_days,
        "permissions": [
            {"permission": u.permission, "lastUsedAt": iso(u.last_used_at), "unused": u.unused}
            for u in uses
        ],
        "unused": [u.permission for u in uses if u.unused],
        "lastUsedAt": iso(key.last_used_at),
        "idleDisableAt": iso(idle.disable_at(key, settings.idle_key_days)),
    }

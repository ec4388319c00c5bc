"""What `gateway users list` and `gateway keys list` print: lines for people, JSON for scripts.

The JSON fields are an allow-list with stable names: a field added to `User` or `ApiKey` (a
hash, an encrypted copy) never reaches the output by accident.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from gateway.keys import format as keyformat
from gateway.store.base import ApiKey, User


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def user_fields(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "admin": user.is_admin,
        "service": user.is_service,
        "disabled": user.disabled,
        "grants": list(user.grants),
        "created_at": _when(user.created_at),
    }


def key_fields(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "masked": keyformat.mask(key.id),
        "user_id": key.user_id,
        "label": key.label,
        "status": key.status,
        "permissions": list(key.permissions),
        "path": key.path_rule,
        "created_at": _when(key.created_at),
        "expires_at": _when(key.expires_at),
        "last_used_at": _when(key.last_used_at),
        "application_identifier": key.application_identifier,
        "redirect_origin": key.redirect_origin,
        "legacy": key.legacy,
    }


def as_json(items: Iterable[dict[str, Any]]) -> str:
    """One JSON array: `gateway keys list --user X --json | jq ...`."""
    return json.dumps(list(items), indent=2)


def user_line(user: User) -> str:
    flags = [
        name
        for name, on in (
            ("admin", user.is_admin),
            ("service", user.is_service),
            ("disabled", user.disabled),
        )
        if on
    ]
    return (
        f"{user.id}  {user.email}  {','.join(flags) or '-'}  grants={' '.join(user.grants) or '-'}"
    )


def key_line(key: ApiKey) -> str:
    return (
        f"{key.id}  {keyformat.mask(key.id)}  {key.status}  label={key.label!r}  "
        f"permissions={' '.join(key.permissions) or '-'}  path={key.path_rule or '-'}  "
        f"expires={key.expires_at.isoformat() if key.expires_at else '-'}  "
        f"last-used={key.last_used_at.isoformat() if key.last_used_at else '-'}"
        + (f"  legacy={key.legacy}" if key.legacy else "")
        + (f"  networks={' '.join(key.allowed_networks)}" if key.allowed_networks else "")
        + (f"  replaced-by={key.replaced_by}" if key.replaced_by else "")
    )

"""Rotation with a grace period: what the new key inherits and when the old one stops. Pure.

A rotation mints a successor that carries every attribute of the old key (permissions, path
restriction, application identifier, expiry and any attribute added to `ApiKey` later, such
as limits) except what makes a key a different key: its id, hash, hashing-secret fingerprint,
retrievable copy and bookkeeping times. The old key is not deleted: its expiry is brought
forward to the end of the grace (never later than it already was), which every cache layer
honours because the expiry travels with the cached record and is checked on every hit.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta

from gateway.store.base import ApiKey

MAX_GRACE = timedelta(days=7)
IMMEDIATE = "immediate"
_DURATION = re.compile(r"^(\d{1,7})([smhdw]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# What a successor never inherits: identity, secret material and bookkeeping. Every other
# field of `ApiKey` is copied, so attributes added later are carried without changes here.
NOT_INHERITED = frozenset(
    {
        "id",
        "key_hash",
        "secret_fingerprint",
        "encrypted_key",
        "created_at",
        "last_used_at",
        "status",
        "replaced_by",
        "leaked_at",
        "leak_source",
        "legacy",  # the successor is a key of Keygate's own format
    }
)


def parse_grace(text: str | int) -> timedelta:
    """`immediate`, seconds, or a duration such as 90s, 30m, 1h, 7d; at most MAX_GRACE.
    Raises ValueError with a sentence that says what is accepted."""
    if isinstance(text, int) and not isinstance(text, bool):
        raw = str(text)
    elif isinstance(text, str):
        raw = text.strip().lower()
    else:
        raise ValueError("the grace must be text such as 1h, or a number of seconds")
    if raw == IMMEDIATE:
        return timedelta(0)
    match = _DURATION.match(raw)
    if not match:
        raise ValueError(
            f"{str(text)[:40]!r} is not a grace period: use immediate, or a duration such as "
            "90s, 30m, 1h or 7d"
        )
    grace = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if grace > MAX_GRACE:
        raise ValueError("the grace period may be at most 7 days")
    return grace


def grace_end(now: datetime, grace: timedelta, expires_at: datetime | None) -> datetime:
    """When the old key stops: after the grace, but never later than its own expiry."""
    end = now + grace
    return end if expires_at is None else min(end, expires_at)


def successor(
    old: ApiKey,
    *,
    key_id: str,
    key_hash: bytes,
    secret_fingerprint: str | None,
    encrypted_key: bytes | None,
    created_at: datetime,
    permissions: tuple[str, ...] | None = None,
) -> ApiKey:
    """The new key of a rotation: a copy of `old` under a new identity (and, for "narrow
    this key", fewer permissions)."""
    changes: dict[str, object] = {
        "id": key_id,
        "key_hash": key_hash,
        "secret_fingerprint": secret_fingerprint,
        "encrypted_key": encrypted_key,
        "created_at": created_at,
        "last_used_at": None,
        "status": "active",
        "replaced_by": None,
        "leaked_at": None,
        "leak_source": None,
    }
    if permissions is not None:
        changes["permissions"] = permissions
    return dataclasses.replace(old, **changes)  # type: ignore[arg-type]

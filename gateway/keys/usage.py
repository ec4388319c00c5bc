"""Least privilege: which of a key's permissions the requests it made actually used.

On the request path only a dict entry is written per allowed request (key id and the
requirement the route asked for, with the key's permissions); which of the key's own
permissions satisfied the requirement is worked out when the batch is flushed, off the
request path, with the other last-used times (services.py). A requirement satisfied by
several of the key's permissions marks each of them used.

`report` (pure) turns the recorded times into what the API and the key page show: per
permission its last use and whether it is "granted but unused" for the configured days.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway.policy.model import Catalog, Perm
from gateway.store.base import ApiKey

# Entries kept between flushes at most: beyond this, uses are dropped (never the request).
MAX_PENDING: Final = 100_000


class PermissionUsage:
    """The uses noted since the last flush, per (key id, requirement)."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, Perm], tuple[float, tuple[Perm, ...]]] = {}

    def note(self, key_id: str, need: Perm, key_permissions: tuple[Perm, ...]) -> None:
        if len(self._pending) < MAX_PENDING or (key_id, need) in self._pending:
            self._pending[(key_id, need)] = (time.time(), key_permissions)

    def take(self, catalog: Catalog) -> list[tuple[str, str, datetime]]:
        """(key id, permission, when) for every key permission a noted request used."""
        taken, self._pending = self._pending, {}
        latest: dict[tuple[str, str], float] = {}
        for (key_id, need), (at, held) in taken.items():
            for perm in held:
                if catalog.satisfies([perm], need):
                    slot = (key_id, str(perm))
                    latest[slot] = max(at, latest.get(slot, 0.0))
        return [
            (key_id, perm, datetime.fromtimestamp(at, UTC))
            for (key_id, perm), at in sorted(latest.items())
        ]


@dataclass(frozen=True, slots=True)
class PermissionUse:
    permission: str
    last_used_at: datetime | None
    unused: bool  # granted, and not used for `days` (only once the key is that old)


def report(
    key: ApiKey, used: Mapping[str, datetime], days: float, now: datetime
) -> tuple[PermissionUse, ...]:
    """Each of the key's permissions with its last use, and whether it is unused."""
    horizon = now - timedelta(days=days)
    old_enough = key.created_at <= horizon
    return tuple(
        PermissionUse(
            perm,
            used.get(perm),
            old_enough and (used.get(perm) is None or used[perm] < horizon),
        )
        for perm in key.permissions
    )


def kept_permissions(uses: tuple[PermissionUse, ...]) -> list[str]:
    """The permissions "narrow this key" keeps: those used within the window."""
    return [u.permission for u in uses if not u.unused]

"""Least privilege and idle keys, pure: resolving which key permission met a requirement,
"granted but unused", what "narrow this key" keeps, and when an idle key is disabled."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.keys import idle
from gateway.keys.usage import PermissionUsage, kept_permissions, report
from gateway.policy.loader import load_policy
from gateway.store.base import ApiKey

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_policy([ROOT / "policies" / "example.yaml"]).catalog
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
VIEW = "demo.store.canviewinvoices"
MODIFY = "demo.store.canmodifystoresettings"
REPORTS = "demo.reports.read"


def key(created_days_ago: float = 90, **changes: object) -> ApiKey:
    base = ApiKey(
        id="apk_0123456789abcdef",
        key_hash=b"h",
        user_id="u1",
        label="k",
        permissions=(REPORTS, f"{MODIFY}:S1", VIEW),
        path_rule=None,
        status="active",
        created_at=NOW - timedelta(days=created_days_ago),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_requirement_marks_every_key_permission_that_meets_it() -> None:
    """`canviewinvoices:S1` is met by the key's MODIFY:S1 (which implies it) and by its
    unscoped VIEW: both are used; REPORTS is not. The latest time per permission wins."""
    usage = PermissionUsage()
    held = tuple(CATALOG.parse(p) for p in key().permissions)
    usage.note("apk_a", CATALOG.parse(f"{VIEW}:S1"), held)
    usage.note("apk_a", CATALOG.parse(f"{VIEW}:S1"), held)
    taken = usage.take(CATALOG)
    assert sorted((k, p) for k, p, _ in taken) == [("apk_a", f"{MODIFY}:S1"), ("apk_a", VIEW)]
    assert usage.take(CATALOG) == []


def test_unused_needs_a_key_older_than_the_window() -> None:
    """Granted but not used within 30 days is unused, once the key is 30 days old; narrowing
    keeps the rest."""
    used = {REPORTS: NOW - timedelta(days=2), VIEW: NOW - timedelta(days=45)}
    uses = report(key(), used, 30, NOW)
    assert [(u.permission, u.unused) for u in uses] == [
        (REPORTS, False),
        (f"{MODIFY}:S1", True),
        (VIEW, True),
    ]
    assert kept_permissions(uses) == [REPORTS]
    young = report(key(created_days_ago=3), {}, 30, NOW)
    assert not any(u.unused for u in young)


def test_idle_keys_are_disabled_counting_from_the_last_use() -> None:
    """Never used: from creation; used: from the last use; off (0) or not active: never."""
    never = key(created_days_ago=10)
    assert idle.disable_at(never, 30) == never.created_at + timedelta(days=30)
    used = key(last_used_at=NOW - timedelta(days=1))
    assert idle.disable_at(used, 30) == NOW + timedelta(days=29)
    assert idle.disable_at(used, 0) is None
    assert idle.disable_at(key(status="disabled"), 30) is None

"""Rotation's pure parts: the grace syntax, when the old key stops, what the new key inherits."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.keys import rotation
from gateway.store.base import ApiKey

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("immediate", 0),
        ("IMMEDIATE", 0),
        ("0", 0),
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("7d", 7 * 86400),
        ("1w", 7 * 86400),
        (3600, 3600),
        ("2", 2),
    ],
)
def test_grace_syntax(text: str | int, seconds: int) -> None:
    """`immediate`, seconds and unit durations up to 7 days are grace periods."""
    assert rotation.parse_grace(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["8d", "2w", "604801", "-1h", "1y", "", "soon", "1.5h", True])
def test_grace_refused(text: object) -> None:
    """Anything else, and anything beyond 7 days, is refused with a sentence."""
    with pytest.raises(ValueError, match=r"grace|immediate"):
        rotation.parse_grace(text)  # type: ignore[arg-type]


@given(
    grace=st.integers(min_value=0, max_value=7 * 86400),
    expiry=st.none() | st.integers(min_value=-86400, max_value=30 * 86400),
)
def test_grace_never_outlives_the_expiry(grace: int, expiry: int | None) -> None:
    """The old key stops after the grace or at its own expiry, whichever comes first."""
    expires_at = None if expiry is None else NOW + timedelta(seconds=expiry)
    end = rotation.grace_end(NOW, timedelta(seconds=grace), expires_at)
    assert end <= NOW + timedelta(seconds=grace)
    if expires_at is not None:
        assert end <= expires_at
    assert end in {NOW + timedelta(seconds=grace), expires_at}


def _key(**changes: object) -> ApiKey:
    base = ApiKey(
        id="apk_0123456789abcdef",
        key_hash=b"old-hash",
        user_id="u1",
        label="deploys",
        permissions=("a.read", "a.write"),
        path_rule="/api/a",
        status="disabled",
        created_at=NOW - timedelta(days=30),
        expires_at=NOW + timedelta(days=3),
        last_used_at=NOW - timedelta(hours=1),
        application_identifier="app",
        redirect_origin="https://app.example",
        encrypted_key=b"sealed",
        secret_fingerprint="old-fp",
        replaced_by=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_successor_copies_every_field_but_identity_and_bookkeeping() -> None:
    """Every ApiKey field not in NOT_INHERITED (limits and whatever comes later) is carried."""
    old = _key()
    new = rotation.successor(
        old,
        key_id="apk_fedcba9876543210",
        key_hash=b"new-hash",
        secret_fingerprint="fp",
        encrypted_key=None,
        created_at=NOW,
    )
    for f in dataclasses.fields(ApiKey):
        if f.name not in rotation.NOT_INHERITED:
            assert getattr(new, f.name) == getattr(old, f.name), f.name
    assert (new.id, new.key_hash, new.secret_fingerprint, new.encrypted_key) == (
        "apk_fedcba9876543210",
        b"new-hash",
        "fp",
        None,
    )
    assert (new.created_at, new.last_used_at, new.status, new.replaced_by) == (
        NOW,
        None,
        "active",
        None,
    )
    assert {f.name for f in dataclasses.fields(ApiKey)} >= rotation.NOT_INHERITED


def test_successor_can_be_narrowed() -> None:
    """ "Narrow this key" is a rotation with fewer permissions."""
    new = rotation.successor(
        _key(),
        key_id="apk_fedcba9876543210",
        key_hash=b"h",
        secret_fingerprint=None,
        encrypted_key=None,
        created_at=NOW,
        permissions=("a.read",),
    )
    assert new.permissions == ("a.read",)

"""The store on both backends: migrations, users, resources, keys, the audit log, timestamps,
transactions and unreachable databases. Every test runs on SQLite and on PostgreSQL, each on a
fresh database."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.services import open_services
from gateway.store import open_store
from gateway.store.base import (
    ApiKey,
    Audit,
    Conflict,
    Resource,
    Store,
    StoreError,
    StoreUnavailable,
    User,
)
from tests.conftest import make_settings

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def migration_files(backend: str) -> list[tuple[int, str]]:
    folder = resources.files("gateway.store") / "migrations" / backend
    names = sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql"))
    return [(int(n.split("_", 1)[0]), n) for n in names]


async def raw_rows(url: str, sql: str) -> list[dict[str, Any]]:
    """Rows read straight from the database, past the store (to see what it really wrote)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await pg.fetch(sql)]
    finally:
        await pg.close()


async def audit_count(url: str) -> int:
    return int((await raw_rows(url, "SELECT count(*) AS n FROM audit_log"))[0]["n"])


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


def a_user(n: int = 1, **changes: Any) -> User:
    values: dict[str, Any] = {
        "id": f"user{n}",
        "email": f"user{n}@example.com",
        "password_hash": f"$argon2id$hash{n}",
        "is_admin": False,
        "is_service": False,
        "disabled": False,
        "grants": ("demo.reports.read",),
        "created_at": T0,
    }
    values.update(changes)
    return User(**values)


def a_key(n: int = 1, user_id: str = "user1", **changes: Any) -> ApiKey:
    values: dict[str, Any] = {
        "id": f"apk_key{n:013d}",
        "key_hash": bytes([n]) * 32,
        "user_id": user_id,
        "label": f"key {n}",
        "permissions": ("demo.reports.read",),
        "path_rule": None,
        "status": "active",
        "created_at": T0 + timedelta(seconds=n),
    }
    values.update(changes)
    return ApiKey(**values)


def audit(action: str, target: str, **detail: Any) -> Audit:
    return Audit("cli", action, target, detail)


# ---- migrations -------------------------------------------------------------------------


async def test_migrate_applies_every_migration_then_nothing(store_url: str) -> None:
    """A fresh database gets every migration in order; a second migrate() applies none."""
    s = await open_store(store_url)
    try:
        expected = migration_files(s.backend)
        assert await s.migrate() == [v for v, _ in expected]
        assert await s.migrate() == []
    finally:
        await s.close()
    rows = await raw_rows(store_url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == expected


async def test_migrate_is_idempotent_across_connections(store_url: str) -> None:
    """Reopening a migrated database applies nothing and keeps its data."""
    first = await open_store(store_url)
    await first.migrate()
    await first.create_user(a_user(), audit("user.create", "user:user1"))
    await first.close()
    second = await open_store(store_url)
    try:
        assert await second.migrate() == []
        assert await second.get_user("user1") == a_user()
    finally:
        await second.close()


# ---- users ------------------------------------------------------------------------------


async def test_create_and_get_user(store: Store) -> None:
    """A created user reads back equal, by id and by email in any case."""
    user = a_user(email="Alice@Example.com", grants=("a", "b:S1"))
    assert await store.create_user(user, audit("user.create", "user:user1")) == user
    assert await store.get_user("user1") == user
    assert await store.get_user_by_email("alice@example.COM") == user
    assert await store.get_user("nobody") is None
    assert await store.get_user_by_email("nobody@example.com") is None


async def test_duplicate_email_is_a_conflict_in_any_case(store: Store) -> None:
    """A second user whose email differs only in case is refused with Conflict."""
    await store.create_user(a_user(1, email="bob@example.com"), audit("user.create", "user:1"))
    with pytest.raises(Conflict):
        await store.create_user(a_user(2, email="BOB@Example.COM"), audit("user.create", "user:2"))
    assert [u.id for u in await store.list_users()] == ["user1"]


async def test_duplicate_user_id_is_a_conflict(store: Store) -> None:
    """Two users with one id are refused with Conflict."""
    await store.create_user(a_user(1), audit("user.create", "user:1"))
    with pytest.raises(Conflict):
        await store.create_user(
            a_user(1, email="other@example.com"), audit("user.create", "user:1")
        )


async def test_list_users_ordered_by_email(store: Store) -> None:
    """list_users returns everybody, ordered by email."""
    for n, email in ((1, "carol@example.com"), (2, "alice@example.com"), (3, "bob@example.com")):
        await store.create_user(a_user(n, email=email), audit("user.create", f"user:{n}"))
    assert [u.email for u in await store.list_users()] == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]


async def test_update_user_flags_grants_and_password_hash(store: Store) -> None:
    """update_user changes exactly the given fields and returns the new record."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    updated = await store.update_user(
        "user1",
        {
            "is_admin": True,
            "disabled": True,
            "grants": ["x", "y:S2"],
            "password_hash": "$argon2id$new",
        },
        audit("user.update", "user:user1"),
    )
    expected = replace(
        a_user(), is_admin=True, disabled=True, grants=("x", "y:S2"), password_hash="$argon2id$new"
    )
    assert updated == expected
    assert await store.get_user("user1") == expected
    back = await store.update_user("user1", {"disabled": False}, audit("user.enable", "user:1"))
    assert back is not None
    assert back.disabled is False
    assert back.is_admin is True


async def test_update_user_service_flag_and_email(store: Store) -> None:
    """The service flag and the email are updatable; a taken email is a Conflict."""
    await store.create_user(a_user(1), audit("user.create", "user:1"))
    await store.create_user(a_user(2), audit("user.create", "user:2"))
    updated = await store.update_user(
        "user1", {"is_service": True, "email": "new@example.com"}, audit("user.update", "user:1")
    )
    assert updated is not None
    assert (updated.is_service, updated.email) == (True, "new@example.com")
    with pytest.raises(Conflict):
        await store.update_user(
            "user2", {"email": "NEW@example.com"}, audit("user.update", "user:2")
        )


async def test_update_unknown_user_returns_none_and_audits_nothing(
    store: Store, store_url: str
) -> None:
    """Updating a user that does not exist returns None and leaves no audit record."""
    before = await audit_count(store_url)
    assert await store.update_user("ghost", {"disabled": True}, audit("x", "user:ghost")) is None
    assert await audit_count(store_url) == before


async def test_update_user_refuses_unknown_fields(store: Store) -> None:
    """Only allow-listed columns can be updated (no id, no created_at, nothing else)."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    for changes in ({"id": "x"}, {"created_at": T0}, {}, {"is_admin; DROP TABLE users": 1}):
        with pytest.raises(ValueError, match="cannot update"):
            await store.update_user("user1", changes, audit("user.update", "user:user1"))
    assert await store.get_user("user1") == a_user()


# ---- resources --------------------------------------------------------------------------


async def test_resources_put_upsert_list_delete(store: Store) -> None:
    """Resources are upserted by (type, id), listed per type or all, and deleted."""
    await store.put_resource(Resource("store", "S2", "Second"), audit("resource.put", "r:S2"))
    await store.put_resource(Resource("store", "S1", "Main"), audit("resource.put", "r:S1"))
    await store.put_resource(Resource("team", "T1", "Ops"), audit("resource.put", "r:T1"))
    await store.put_resource(Resource("store", "S1", "Main shop"), audit("resource.put", "r:S1"))
    assert await store.list_resources("store") == [
        Resource("store", "S1", "Main shop"),
        Resource("store", "S2", "Second"),
    ]
    assert await store.list_resources("team") == [Resource("team", "T1", "Ops")]
    assert await store.list_resources("nothing") == []
    assert len(await store.list_resources()) == 3
    assert await store.delete_resource("store", "S1", audit("resource.delete", "r:S1")) is True
    assert await store.delete_resource("store", "S1", audit("resource.delete", "r:S1")) is False
    assert await store.list_resources("store") == [Resource("store", "S2", "Second")]


# ---- keys -------------------------------------------------------------------------------


async def test_create_get_and_find_key_with_owner(store: Store) -> None:
    """A key reads back equal by id, and by hash together with its owner."""
    owner = a_user(grants=("demo.reports.read", "demo.store.canviewinvoices:S1"))
    await store.create_user(owner, audit("user.create", "user:user1"))
    key = a_key(
        path_rule="/api/reports",
        expires_at=T0 + timedelta(days=30),
        application_identifier="app.example",
        redirect_origin="https://app.example",
        encrypted_key=b"\x01sealed",
    )
    await store.create_key(key, audit("key.create", f"key:{key.id}"))
    assert await store.get_key(key.id) == key
    found = await store.find_key_by_hash(key.key_hash)
    assert found is not None
    assert found.key == key
    assert found.owner == owner
    assert await store.find_key_by_hash(b"\xff" * 32) is None
    assert await store.get_key("apk_missing000000000") is None


async def test_find_key_sees_the_owners_current_state(store: Store) -> None:
    """The owner joined to a key is read fresh: disabling him shows on the next lookup."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    key = a_key()
    await store.create_key(key, audit("key.create", f"key:{key.id}"))
    await store.update_user("user1", {"disabled": True}, audit("user.disable", "user:user1"))
    found = await store.find_key_by_hash(key.key_hash)
    assert found is not None
    assert found.owner.disabled is True


async def test_list_keys_by_user_in_creation_order(store: Store) -> None:
    """list_keys returns one user's keys only, oldest first."""
    await store.create_user(a_user(1), audit("user.create", "user:1"))
    await store.create_user(a_user(2), audit("user.create", "user:2"))
    for n, user_id in ((3, "user1"), (1, "user1"), (2, "user2")):
        created = T0 + timedelta(minutes=10 - n)
        await store.create_key(
            a_key(n, user_id, created_at=created), audit("key.create", f"key:{n}")
        )
    assert [k.id for k in await store.list_keys("user1")] == [a_key(3).id, a_key(1).id]
    assert [k.id for k in await store.list_keys("user2")] == [a_key(2).id]
    assert await store.list_keys("nobody") == []


async def test_duplicate_key_hash_is_a_conflict(store: Store) -> None:
    """Two keys with the same hash cannot exist."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    await store.create_key(a_key(1), audit("key.create", "key:1"))
    with pytest.raises(Conflict):
        await store.create_key(a_key(2, key_hash=a_key(1).key_hash), audit("key.create", "key:2"))
    assert [k.id for k in await store.list_keys("user1")] == [a_key(1).id]


async def test_key_needs_an_existing_owner(store: Store) -> None:
    """A key for a user that does not exist is refused, and nothing is written."""
    with pytest.raises(StoreError) as info:
        await store.create_key(a_key(1, "ghost"), audit("key.create", "key:1"))
    assert not isinstance(info.value, Conflict | StoreUnavailable)
    assert await store.get_key(a_key(1).id) is None


async def test_update_key_status_and_label(store: Store) -> None:
    """update_key changes status and label and returns the new record; unknown ids give None."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    key = a_key()
    await store.create_key(key, audit("key.create", f"key:{key.id}"))
    updated = await store.update_key(
        key.id, {"status": "disabled", "label": "renamed"}, audit("key.disable", f"key:{key.id}")
    )
    assert updated == replace(key, status="disabled", label="renamed")
    assert await store.get_key(key.id) == updated
    assert await store.update_key("apk_nothere", {"status": "active"}, audit("x", "k")) is None
    with pytest.raises(ValueError, match="cannot update"):
        await store.update_key(key.id, {"key_hash": b"x"}, audit("x", "k"))


async def test_delete_key_returns_the_deleted_row(store: Store) -> None:
    """delete_key returns the row it deleted, then None for the same id."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    key = a_key()
    await store.create_key(key, audit("key.create", f"key:{key.id}"))
    assert await store.delete_key(key.id, audit("key.revoke", f"key:{key.id}")) == key
    assert await store.get_key(key.id) is None
    assert await store.find_key_by_hash(key.key_hash) is None
    assert await store.delete_key(key.id, audit("key.revoke", f"key:{key.id}")) is None


async def test_touch_keys_only_moves_last_used_forward(store: Store) -> None:
    """touch_keys records a later last-used time and ignores an earlier one."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    k1, k2 = a_key(1), a_key(2)
    await store.create_key(k1, audit("key.create", "key:1"))
    await store.create_key(k2, audit("key.create", "key:2"))
    later = T0 + timedelta(hours=2)
    await store.touch_keys({k1.id: later, k2.id: T0 + timedelta(hours=1)})
    await store.touch_keys({k1.id: T0 + timedelta(hours=1), "apk_unknown": later})
    await store.touch_keys({})
    got1, got2 = await store.get_key(k1.id), await store.get_key(k2.id)
    assert got1 is not None
    assert got2 is not None
    assert got1.last_used_at == later
    assert got2.last_used_at == T0 + timedelta(hours=1)
    await store.touch_keys({k2.id: later + timedelta(microseconds=1)})
    got2 = await store.get_key(k2.id)
    assert got2 is not None
    assert got2.last_used_at == later + timedelta(microseconds=1)


# ---- audit ------------------------------------------------------------------------------


async def test_every_mutating_call_writes_exactly_one_audit_record(
    store: Store, store_url: str
) -> None:
    """Each change writes one audit record carrying its actor, action, target and detail."""
    key = a_key()
    calls = [
        ("user.create", lambda a: store.create_user(a_user(), a)),
        ("user.disable", lambda a: store.update_user("user1", {"disabled": True}, a)),
        ("resource.put", lambda a: store.put_resource(Resource("store", "S1", "Main"), a)),
        ("resource.delete", lambda a: store.delete_resource("store", "S1", a)),
        ("key.create", lambda a: store.create_key(key, a)),
        ("key.disable", lambda a: store.update_key(key.id, {"status": "disabled"}, a)),
        ("key.revoke", lambda a: store.delete_key(key.id, a)),
    ]
    for n, (action, call) in enumerate(calls):
        before = await audit_count(store_url)
        record = Audit(f"user:actor{n}", action, f"target:{n}", {"n": n, "note": "x"})
        await call(record)
        assert await audit_count(store_url) == before + 1, action
        latest = (await store.list_audit(limit=1))[0]
        assert (latest.actor, latest.action, latest.target) == (
            f"user:actor{n}",
            action,
            f"target:{n}",
        )
        assert latest.detail == {"n": n, "note": "x"}
        assert latest.at.utcoffset() == timedelta(0)


async def test_calls_that_change_nothing_write_no_audit(store: Store, store_url: str) -> None:
    """Deleting what does not exist and bookkeeping (touch_keys) leave the log alone."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    await store.create_key(a_key(), audit("key.create", "key:1"))
    before = await audit_count(store_url)
    assert await store.delete_resource("store", "nope", audit("resource.delete", "r")) is False
    assert await store.delete_key("apk_nothere", audit("key.revoke", "k")) is None
    assert await store.update_key("apk_nothere", {"label": "x"}, audit("key.rename", "k")) is None
    await store.touch_keys({a_key().id: T0 + timedelta(days=1)})
    assert await audit_count(store_url) == before


async def test_list_audit_newest_first_with_target_filter_and_limit(store: Store) -> None:
    """list_audit returns the newest records first, optionally for one target, up to a limit."""
    for n in range(5):
        await store.put_resource(
            Resource("store", f"S{n}", "x"), audit("resource.put", f"r:{n % 2}")
        )
    assert [r.target for r in await store.list_audit(limit=3)] == ["r:0", "r:1", "r:0"]
    only = await store.list_audit(target="r:1")
    assert [r.target for r in only] == ["r:1", "r:1"]
    assert only[0].id > only[1].id


async def test_audit_log_never_holds_keys_passwords_or_their_hashes(store_url: str) -> None:
    """Scanning every audit row finds no key, key hash, password or password hash."""
    password = "correct horse battery"
    async with open_services(make_settings(store_url)) as s:
        admin = await s.users.create(
            email="admin@example.com", password=password, actor="cli", is_admin=True
        )
        bob = await s.users.create(
            email="bob@example.com", password=password, actor="cli", grants=["demo.reports.read"]
        )
        new = await s.keys.create(
            owner=bob, creator=None, label="reports", permissions=["demo.reports.read"]
        )
        other = await s.keys.create(owner=admin, creator=None, label="x", permissions=[])
        await s.keys.set_status(new.record, "disabled", actor=None)
        await s.keys.rename(new.record, "renamed", actor=None)
        await s.keys.revoke(other.record, actor=None)
        bob = await s.users.set_password(bob, "another password!", actor="cli")
        await s.users.grant(bob, ["demo.store.canviewinvoices:S1"], actor="cli")
        admin_now = await s.users.find("admin@example.com")
        hashes = [admin_now.password_hash, bob.password_hash]
    rows = await raw_rows(store_url, "SELECT actor, action, target, detail FROM audit_log")
    assert len(rows) >= 9
    dump = "\n".join(" ".join(str(v) for v in r.values()) for r in rows)
    forbidden = [
        new.text,
        other.text,
        new.text[len(new.record.id) :],  # the secret part alone
        new.record.key_hash.hex(),
        other.record.key_hash.hex(),
        password,
        "another password!",
        *(h for h in hashes if h),
        "$argon2",
    ]
    for text in forbidden:
        assert text not in dump
    assert f"key:{new.record.id}" in dump  # the public id is how the log names a key


# ---- timestamps -------------------------------------------------------------------------


async def test_timestamps_round_trip_as_aware_utc(store: Store) -> None:
    """Aware datetimes in any offset come back as the same instant, in UTC, to the microsecond."""
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=plus_two)
    await store.create_user(a_user(created_at=created), audit("user.create", "user:user1"))
    key = a_key(created_at=created, expires_at=datetime(2030, 12, 31, 23, 59, 59, 999999, UTC))
    await store.create_key(key, audit("key.create", "key:1"))
    await store.touch_keys({key.id: datetime(2025, 6, 1, 12, 0, 0, 1, tzinfo=plus_two)})
    user = await store.get_user("user1")
    got = await store.get_key(key.id)
    found = await store.find_key_by_hash(key.key_hash)
    assert user is not None
    assert got is not None
    assert found is not None
    stamps = [
        user.created_at,
        got.created_at,
        got.expires_at,
        got.last_used_at,
        found.owner.created_at,
        found.key.created_at,
    ]
    for stamp in stamps:
        assert stamp is not None
        assert stamp.utcoffset() == timedelta(0)
    assert user.created_at == created
    assert user.created_at.hour == 1  # 03:04 at +02:00 is 01:04 UTC
    assert got.expires_at == datetime(2030, 12, 31, 23, 59, 59, 999999, UTC)
    assert got.last_used_at == datetime(2025, 6, 1, 10, 0, 0, 1, UTC)


# ---- transactions -----------------------------------------------------------------------


class Unserialisable:
    """Audit detail that json cannot encode: the audit insert fails after the change ran."""


async def test_failed_audit_rolls_back_user_creation(store: Store, store_url: str) -> None:
    """If the audit record cannot be written, the user is not created either."""
    before = await audit_count(store_url)
    with pytest.raises(TypeError):
        await store.create_user(a_user(), audit("user.create", "user:user1", bad=Unserialisable()))
    assert await store.get_user("user1") is None
    assert await store.list_users() == []
    assert await audit_count(store_url) == before
    await store.create_user(a_user(), audit("user.create", "user:user1"))  # still usable
    assert await store.get_user("user1") == a_user()


async def test_failed_audit_rolls_back_updates_and_deletes(store: Store) -> None:
    """A failed audit insert undoes an update, a key creation and a key deletion."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    key = a_key()
    await store.create_key(key, audit("key.create", "key:1"))
    bad = audit("x", "y", bad=Unserialisable())
    with pytest.raises(TypeError):
        await store.update_user("user1", {"disabled": True, "grants": []}, bad)
    with pytest.raises(TypeError):
        await store.create_key(a_key(2), bad)
    with pytest.raises(TypeError):
        await store.delete_key(key.id, bad)
    with pytest.raises(TypeError):
        await store.update_key(key.id, {"status": "disabled"}, bad)
    with pytest.raises(TypeError):
        await store.put_resource(Resource("store", "S1", "x"), bad)
    assert await store.get_user("user1") == a_user()
    assert await store.get_key(key.id) == key
    assert await store.get_key(a_key(2).id) is None
    assert await store.list_resources() == []


# ---- unreachable databases ----------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_postgres_on_a_closed_port_is_unavailable() -> None:
    """A PostgreSQL URL nobody answers gives StoreUnavailable naming PostgreSQL."""
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/keygate"
    with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL"):
        await open_store(url)


async def test_postgres_database_that_does_not_exist_is_unavailable(pg_server: str) -> None:
    """A missing PostgreSQL database gives StoreUnavailable naming the database."""
    url = pg_server.rsplit("/", 1)[0] + "/keygate_no_such_database"
    with pytest.raises(StoreUnavailable, match="keygate_no_such_database"):
        await open_store(url)


@pytest.mark.parametrize(
    "path",
    [
        "/proc/keygate-test.db",  # a folder nobody (not even root) may create files in
        "/proc/keygate-no-folder/keygate.db",  # a folder that cannot be created
    ],
)
async def test_sqlite_in_an_unwritable_place_is_unavailable(path: str) -> None:
    """SQLite where the file cannot be created gives StoreUnavailable naming the path."""
    with pytest.raises(StoreUnavailable, match="cannot open SQLite database") as info:
        await open_store(f"sqlite:///{path}")
    assert path in str(info.value)


async def test_sqlite_under_a_file_or_in_a_non_database_is_unavailable(tmp_path: Path) -> None:
    """A path below a regular file, a folder, or a file that is no database: StoreUnavailable."""
    (tmp_path / "plain").write_text("x")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database file, " * 10)
    for path in (tmp_path / "plain" / "keygate.db", tmp_path, garbage):
        with pytest.raises(StoreUnavailable, match="cannot open SQLite database") as info:
            await open_store(f"sqlite:///{path}")
        assert str(path) in str(info.value)

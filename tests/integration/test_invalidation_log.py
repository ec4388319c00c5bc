"""The invalidation log on both backends: written in the transaction of the change, read by
increasing id, pruned; and the poller applying it to a running verifier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import Unauthenticated
from gateway.keys.poller import RETENTION_SECONDS, InvalidationPoller, retention_for
from gateway.keys.verify import LOOKUP_TIMEOUT
from gateway.services import open_services
from gateway.store import open_store
from gateway.store.base import Conflict, Store
from tests.conftest import make_settings
from tests.integration.test_auth_support import new_key, new_user
from tests.integration.test_store import a_key, a_user, audit, raw_rows


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


async def records(store_url: str) -> list[tuple[bytes, str | None]]:
    rows = await raw_rows(store_url, "SELECT key_hash, user_id FROM invalidations ORDER BY id")
    return [(bytes(r["key_hash"]), r["user_id"]) for r in rows]


async def test_key_changes_write_one_record_each(store: Store, store_url: str) -> None:
    """Disabling, changing and deleting a key each write one record naming its hash and owner;
    creating it writes none."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    key = a_key()
    await store.create_key(key, audit("key.create", "key:k"))
    assert await records(store_url) == []
    await store.update_key(key.id, {"status": "disabled"}, audit("key.disable", "key:k"))
    await store.update_key(key.id, {"path_rule": "/api"}, audit("key.change", "key:k"))
    await store.delete_key(key.id, audit("key.revoke", "key:k"))
    assert await records(store_url) == [(key.key_hash, "user1")] * 3


async def test_user_changes_write_a_record_per_key_but_not_for_a_password(
    store: Store, store_url: str
) -> None:
    """Disabling a user or changing his grants invalidates every one of his keys (and no one
    else's); a new password invalidates nothing."""
    await store.create_user(a_user(1), audit("user.create", "user:user1"))
    await store.create_user(a_user(2), audit("user.create", "user:user2"))
    mine = [a_key(1), a_key(2)]
    for key in [*mine, a_key(3, user_id="user2")]:
        await store.create_key(key, audit("key.create", "key:k"))
    await store.update_user("user1", {"password_hash": "$argon2id$new"}, audit("p", "user:user1"))
    assert await records(store_url) == []
    await store.update_user("user1", {"disabled": True}, audit("user.disable", "user:user1"))
    await store.update_user("user1", {"grants": []}, audit("user.grant", "user:user1"))
    assert await records(store_url) == [(k.key_hash, "user1") for k in mine] * 2


async def test_a_failing_change_writes_no_record(store: Store, store_url: str) -> None:
    """A change that fails (a duplicate email) rolls its invalidation records back with it."""
    await store.create_user(a_user(1), audit("user.create", "user:user1"))
    await store.create_user(a_user(2), audit("user.create", "user:user2"))
    await store.create_key(a_key(1), audit("key.create", "key:k"))
    with pytest.raises(Conflict):
        await store.update_user(
            "user1",
            {"email": "user2@example.com", "disabled": True},
            audit("user.change", "user:user1"),
        )
    assert await records(store_url) == []
    user = await store.get_user("user1")
    assert user is not None
    assert not user.disabled
    assert await store.delete_key("apk_nosuchkey0000000", audit("key.revoke", "key:x")) is None
    assert await records(store_url) == []


async def test_records_are_read_by_increasing_id_and_pruned(store: Store) -> None:
    """read_invalidations pages by id; the found key's version is its latest record's id;
    pruning removes old records only."""
    await store.create_user(a_user(), audit("user.create", "user:user1"))
    key = a_key()
    await store.create_key(key, audit("key.create", "key:k"))
    found = await store.find_key_by_hash(key.key_hash)
    assert found is not None
    assert found.version == 0
    for label in ("a", "b", "c"):
        await store.update_key(key.id, {"label": label}, audit("key.rename", "key:k"))
    first = await store.read_invalidations(0, 2)
    rest = await store.read_invalidations(first[-1].id, 10)
    ids = [r.id for r in first + rest]
    assert len(ids) == 3
    assert ids == sorted(ids)
    found = await store.find_key_by_hash(key.key_hash)
    assert found is not None
    assert found.version == ids[-1]
    assert await store.prune_invalidations(datetime.now(UTC) - timedelta(minutes=10)) == 0
    assert await store.prune_invalidations(datetime.now(UTC) + timedelta(seconds=1)) == 3
    assert await store.read_invalidations(0, 10) == []


async def test_the_poller_applies_a_change_made_by_another_process(store_url: str) -> None:
    """A change written straight to the store (no notice published) is refused after one
    poll, though the key's entry was cached for minutes."""
    settings = make_settings(store_url, local_cache_ttl=600.0)
    async with open_services(settings) as services:
        user = await new_user(services, "poll@example.com", ["demo.reports.read"])
        key = await new_key(services, user, ["demo.reports.read"])
        poller = InvalidationPoller(services.store, services.verifier, None, interval=0.1)
        await poller.poll_once()
        assert (await services.verifier.verify(key.text)).key_id == key.record.id
        await services.store.update_key(
            key.record.id, {"status": "disabled"}, audit("key.disable", "key:k")
        )
        await services.verifier.verify(key.text)  # still cached: nothing told this instance
        assert await poller.poll_once() == 1
        with pytest.raises(Unauthenticated) as refused:
            await services.verifier.verify(key.text)
        assert refused.value.code == "key-disabled"
        assert services.verifier.version(key.record.key_hash) == poller.cursor
        assert await poller.poll_once() == 0


async def test_a_new_poller_learns_every_kept_record_at_start(store_url: str) -> None:
    """An instance started after a change still knows the change's version (so it refuses an
    older Redis entry of that key)."""
    async with open_services(make_settings(store_url)) as services:
        user = await new_user(services, "late@example.com", ["demo.reports.read"])
        key = await new_key(services, user, ["demo.reports.read"])
        await services.keys.revoke(key.record, actor=None)
        assert services.verifier.version(key.record.key_hash) == 0
        poller = InvalidationPoller(services.store, services.verifier, None, interval=0.1)
        assert await poller.poll_once() == 1
        assert services.verifier.version(key.record.key_hash) == poller.cursor > 0


@given(st.floats(min_value=1, max_value=1e6, allow_nan=False))
def test_records_outlive_every_redis_entry_written_before_them(ttl: float) -> None:
    """Records are kept past the Redis entry lifetime plus a lookup, and at least ten minutes."""
    kept = retention_for(ttl)
    assert kept >= ttl + LOOKUP_TIMEOUT
    assert kept >= RETENTION_SECONDS

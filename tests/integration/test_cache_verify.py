"""Key verification against real PostgreSQL and Redis: caches, outages, floods, races."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.cache.redis import TOMBSTONE
from gateway.errors import Unauthenticated, Unavailable
from gateway.services import Services, open_services, run_background
from gateway.settings import Settings
from tests.conftest import make_settings
from tests.integration.test_auth_support import (
    TcpProxy,
    bad_checksum,
    free_port,
    new_key,
    new_user,
    unknown_key,
    wait_until,
)


def settings_for(database_url: str, redis_url: str | None, **changes: Any) -> Settings:
    """Settings with a namespace of their own: pub/sub channels are shared across Redis DBs."""
    return make_settings(
        database_url,
        redis_url=redis_url,
        redis_namespace=f"kgtest{uuid.uuid4().hex[:10]}",
        **changes,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def pg_proxy(pg_url: str) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(int(pg_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]))
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(int(redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]))
    await proxy.start()
    yield proxy
    await proxy.stop()


async def namespace_keys(redis: aioredis.Redis, settings: Settings) -> list[bytes]:
    return sorted(await redis.keys(f"{settings.redis_namespace}:*"))


async def seeded(services: Services, permissions: tuple[str, ...] = ("demo.reports.read",)) -> str:
    owner = await new_user(services, f"{uuid.uuid4().hex[:8]}@example.com", permissions)
    return (await new_key(services, owner, permissions)).text


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Services]:
    """Services with their background tasks (invalidation listener), like a running instance."""
    async with open_services(settings) as services, run_background(services):
        yield services


async def subscribers(redis: aioredis.Redis, settings: Settings) -> int:
    channel = f"{settings.redis_namespace}:invalidate"
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1])


async def test_malformed_keys_reach_no_store(pg_url: str, redis_url: str, redis: Any) -> None:
    """A bad checksum, wrong prefix, odd length or non-ASCII key costs no lookup anywhere."""
    settings = settings_for(pg_url, redis_url)
    async with open_services(settings) as services:
        key = await seeded(services)
        before = await namespace_keys(redis, settings)
        for text in (bad_checksum(key), "xyz" + key[3:], key[:-1], key + "0", key[:-1] + "é"):
            with pytest.raises(Unauthenticated) as caught:
                await services.verifier.verify(text)
            assert caught.value.code == "key-malformed"
        assert services.verifier.lookups == 0
        assert services.verifier.cache_size == 0
        assert await namespace_keys(redis, settings) == before


async def test_a_verified_key_is_cached_in_process_and_in_redis_by_hash(
    pg_url: str, redis_url: str, redis: Any
) -> None:
    """One lookup, then in-process hits; Redis holds the record under the HMAC, never the key."""
    settings = settings_for(pg_url, redis_url)
    async with open_services(settings) as services:
        key = await seeded(services)
        first = await services.verifier.verify(key)
        second = await services.verifier.verify(key)
        assert second is first  # the cached record itself
        assert services.verifier.lookups == 1
        names = await namespace_keys(redis, settings)
        digest = services.hasher.digest(key)
        assert names == [f"{settings.redis_namespace}:key:{digest.hex()}".encode()]
        value = await redis.get(names[0])
        assert key.encode() not in value
        assert key[-40:].encode() not in value  # no part of the secret either


async def test_keys_loaded_together_share_one_expiry_inside_their_ttl(pg_url: str) -> None:
    """Cached keys loaded within 1% of `local_cache_ttl` (at most 0.1 s) of one another get
    the same expiry, so the sources keep one float object for all of them (memory per cached
    key; the compiled build stores the expiry unboxed): never later than the TTL allows,
    never more than that 1% earlier."""
    settings = settings_for(pg_url, None, local_cache_ttl=60.0)
    async with open_services(settings) as services:
        first, second = await seeded(services), await seeded(services)
        verifier = services.verifier
        before = time.monotonic()
        one = await verifier.verify(first)
        two = await verifier.verify(second)
        after = time.monotonic()
        for cached in (one, two):
            assert before + 60.0 - 0.1 < cached.expires <= after + 60.0
        # The rule itself, at chosen times:
        assert verifier._expiry(1000.0) == 1060.0
        assert verifier._expiry(1000.04) == 1060.0  # 0.04 s early: the same
        assert verifier._expiry(1000.0999) == 1060.0
        assert verifier._expiry(1000.1) == 1060.1  # 0.1 s early would be too early: a new one
        assert verifier._expiry(1000.15) == 1060.1
        assert verifier._expiry(999.0) == 1059.0  # never later than its own TTL
    async with open_services(dataclasses.replace(settings, local_cache_ttl=0.5)) as services:
        verifier = services.verifier
        assert verifier._expiry(10.0) == 10.5
        assert verifier._expiry(10.004) == 10.5  # 1% of 0.5 s: 5 ms
        assert verifier._expiry(10.006) == 10.506


async def test_another_instance_is_served_from_redis(pg_url: str, redis_url: str) -> None:
    """A second instance sharing Redis verifies a key without touching the database."""
    settings = settings_for(pg_url, redis_url)
    async with open_services(settings) as a, open_services(settings) as b:
        key = await seeded(a)
        await a.verifier.verify(key)
        verified = await b.verifier.verify(key)
        assert verified.key_id == key[:20]
        assert b.verifier.lookups == 0


async def test_unknown_keys_are_negatively_cached_here_and_in_redis(
    pg_url: str, redis_url: str
) -> None:
    """An unknown key costs one lookup; repeats and other instances are answered from caches."""
    settings = settings_for(pg_url, redis_url, negative_cache_ttl=120.0)
    async with open_services(settings) as a, open_services(settings) as b:
        text = unknown_key()
        for _ in range(3):
            with pytest.raises(Unauthenticated) as caught:
                await a.verifier.verify(text)
            assert caught.value.code == "key-unknown"
        with pytest.raises(Unauthenticated):
            await b.verifier.verify(text)
        assert (a.verifier.lookups, b.verifier.lookups) == (1, 0)


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "no-redis"])
async def test_a_flood_of_unknown_keys_costs_one_lookup_per_distinct_key(
    pg_url: str, redis_url: str, with_redis: bool
) -> None:
    """Random well-formed keys, concurrent duplicates included: at most one lookup each."""
    settings = settings_for(pg_url, redis_url if with_redis else None, negative_cache_ttl=300.0)
    distinct = [unknown_key() for _ in range(300)]
    async with open_services(settings) as services:
        for _ in range(2):  # a second wave is answered from the negative cache alone
            flood = [services.verifier.verify(text) for text in distinct * 4]
            results = await asyncio.gather(*flood, return_exceptions=True)
            assert all(isinstance(r, Unauthenticated) and r.code == "key-unknown" for r in results)
        assert services.verifier.lookups == len(distinct)


async def test_concurrent_misses_share_one_lookup(pg_url: str, redis_url: str) -> None:
    """Fifty concurrent first uses of a key make one database lookup and all succeed."""
    settings = settings_for(pg_url, redis_url)
    async with open_services(settings) as services:
        key = await seeded(services)
        results = await asyncio.gather(*(services.verifier.verify(key) for _ in range(50)))
        assert {r.key_id for r in results} == {key[:20]}
        assert services.verifier.lookups == 1


async def test_a_failed_shared_lookup_fails_every_waiter_with_503(
    pg_url: str, pg_proxy: TcpProxy
) -> None:
    """Database down: every request waiting on the one lookup gets 503; none is let in."""
    settings = settings_for(pg_proxy.url(pg_url), None)
    async with open_services(settings) as services:
        key = await seeded(services)
        await pg_proxy.stop()
        results = await asyncio.gather(
            *(services.verifier.verify(key) for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) for r in results), results
        assert services.verifier.lookups == 1
        await pg_proxy.start()

        async def recovered() -> bool:
            with contextlib.suppress(Unavailable):
                await services.verifier.verify(key)
                return True
            return False

        assert await wait_until(recovered)


async def test_redis_down_verifies_against_the_database(pg_url: str) -> None:
    """A Redis that does not answer (closed port) degrades to database lookups, not errors."""
    settings = settings_for(pg_url, f"redis://127.0.0.1:{free_port()}/0", local_cache_ttl=0.0)
    async with serving(settings) as services:
        key = await seeded(services)
        for _ in range(3):
            assert (await services.verifier.verify(key)).key_id == key[:20]
        assert services.verifier.lookups == 3
        await services.keys.revoke(await services.keys.get_owned(key[:20], None), actor=None)
        with pytest.raises(Unauthenticated):
            await services.verifier.verify(key)


async def test_redis_lost_midway_falls_back_to_the_database(
    pg_url: str, redis_url: str, redis_proxy: TcpProxy
) -> None:
    """When the Redis in use stops, keys are verified against the database meanwhile."""
    settings = settings_for(pg_url, redis_proxy.url(redis_url), local_cache_ttl=0.0)
    async with serving(settings) as services:
        key = await seeded(services)
        await services.verifier.verify(key)
        await redis_proxy.stop()
        before = services.verifier.lookups
        assert (await services.verifier.verify(key)).key_id == key[:20]
        assert services.verifier.lookups == before + 1


async def test_both_stores_down_serve_only_stale_window_entries(
    pg_url: str, redis_url: str, pg_proxy: TcpProxy, redis_proxy: TcpProxy
) -> None:
    """Database and Redis down: a recent in-process entry serves; unknown keys get 503;
    a key revoked before the outage is refused, never let in."""
    settings = settings_for(
        pg_proxy.url(pg_url),
        redis_proxy.url(redis_url),
        local_cache_ttl=0.0,  # every use revalidates, so only the stale window can serve
        negative_cache_ttl=0.0,
        stale_window=300.0,
    )
    async with open_services(settings) as services:
        kept, revoked = await seeded(services), await seeded(services)
        await services.verifier.verify(kept)
        await services.verifier.verify(revoked)
        seen_unknown = unknown_key()
        with pytest.raises(Unauthenticated):
            await services.verifier.verify(seen_unknown)
        await services.keys.revoke(await services.keys.get_owned(revoked[:20], None), actor=None)
        await pg_proxy.stop()
        await redis_proxy.stop()

        assert (await services.verifier.verify(kept)).key_id == kept[:20]
        with pytest.raises(Unavailable):
            await services.verifier.verify(revoked)
        with pytest.raises(Unavailable):
            await services.verifier.verify(unknown_key())
        with pytest.raises(Unauthenticated) as caught:  # known to be unknown: still refused
            await services.verifier.verify(seen_unknown)
        assert caught.value.code == "key-unknown"


async def test_no_stale_window_means_503_when_both_stores_are_down(
    pg_url: str, pg_proxy: TcpProxy
) -> None:
    """With stale_window 0 an expired in-process entry is never served during an outage."""
    settings = settings_for(pg_proxy.url(pg_url), None, local_cache_ttl=0.0, stale_window=0.0)
    async with open_services(settings) as services:
        key = await seeded(services)
        await services.verifier.verify(key)
        await pg_proxy.stop()
        with pytest.raises(Unavailable):
            await services.verifier.verify(key)


async def test_after_a_database_failure_misses_back_off(pg_url: str, pg_proxy: TcpProxy) -> None:
    """Once the database has failed a lookup, misses within `store_backoff` are answered 503
    at once without asking it (no pile-up of requests each waiting for a timeout, no storm
    on the database as it comes back); after the back-off it is asked again."""
    settings = settings_for(pg_proxy.url(pg_url), None, store_backoff=0.5, stale_window=0.0)
    async with open_services(settings) as services:
        key = await seeded(services)
        verifier = services.verifier
        await pg_proxy.stop()
        before = verifier.lookups
        with pytest.raises(Unavailable):
            await verifier.verify(key)
        assert verifier.lookups == before + 1
        for _ in range(5):
            with pytest.raises(Unavailable):
                await verifier.verify(unknown_key())
        assert verifier.lookups == before + 1  # none of them reached the database
        await pg_proxy.start()

        async def verifies() -> bool:
            with contextlib.suppress(Unavailable):
                return (await verifier.verify(key)).key_id == key[:20]
            return False

        assert await wait_until(verifies)
        assert verifier.lookups > before + 1


async def test_without_redis_the_in_process_cache_alone_is_used(pg_url: str) -> None:
    """No Redis configured: one lookup, then in-process hits; revocation drops the entry."""
    settings = settings_for(pg_url, None)
    async with open_services(settings) as services:
        assert services.shared is None
        key = await seeded(services)
        await services.verifier.verify(key)
        await services.verifier.verify(key)
        assert services.verifier.lookups == 1
        await services.keys.revoke(await services.keys.get_owned(key[:20], None), actor=None)
        with pytest.raises(Unauthenticated) as caught:
            await services.verifier.verify(key)
        assert caught.value.code == "key-unknown"


@pytest.mark.parametrize("change", ["revoke", "disable", "owner-disabled", "grant-revoked"])
async def test_a_change_on_one_instance_reaches_the_other_instances_cache(
    pg_url: str, redis_url: str, redis: Any, change: str
) -> None:
    """Revoke, disable, owner disable, grant removal on A: B drops its cached entry."""
    settings = settings_for(pg_url, redis_url, local_cache_ttl=600.0)
    async with serving(settings) as a, serving(settings) as b:
        assert await wait_until(lambda: _has_subscribers(redis, settings, 2))
        key = await seeded(a)
        assert (await b.verifier.verify(key)).grants
        record = await a.keys.get_owned(key[:20], None)
        owner = await a.users.find(record.user_id)
        if change == "revoke":
            await a.keys.revoke(record, actor=None)
        elif change == "disable":
            await a.keys.set_status(record, "disabled", actor=None)
        elif change == "owner-disabled":
            await a.users.set_disabled(owner, True, actor="test")
        else:
            await a.users.revoke_grants(owner, ["demo.reports.read"], actor="test")
        expected = {
            "revoke": "key-unknown",
            "disable": "key-disabled",
            "owner-disabled": "owner-disabled",
        }

        async def b_sees_it() -> bool:
            try:
                verified = await b.verifier.verify(key)
            except Unauthenticated as exc:
                return exc.code == expected.get(change)
            return change == "grant-revoked" and verified.grants == ()

        assert await wait_until(b_sees_it)


async def _has_subscribers(redis: aioredis.Redis, settings: Settings, count: int) -> bool:
    return await subscribers(redis, settings) >= count


async def test_an_invalidation_during_a_lookup_keeps_its_result_out_of_every_cache(
    pg_url: str, redis_url: str, redis: Any, pg_proxy: TcpProxy
) -> None:
    """A lookup that read the key before its revocation committed, and answers after the
    invalidation, is not cached in process nor in Redis: the next use sees the revocation."""
    direct = settings_for(pg_url, redis_url, local_cache_ttl=600.0)
    slow = dataclasses.replace(direct, database_url=pg_proxy.url(pg_url))
    async with open_services(direct) as a, open_services(slow) as b:
        key = await seeded(a)
        digest = a.hasher.digest(key)
        # Warm B's prepared statement, so the held answer is the row itself, read now.
        await b.verifier.verify(await seeded(a))
        pg_proxy.hold()
        lookup = asyncio.create_task(b.verifier.verify(key))
        await asyncio.wait_for(pg_proxy.answer_held.wait(), 10)  # the old row is on its way
        await a.keys.revoke(await a.keys.get_owned(key[:20], None), actor=None)
        b.verifier.drop(digest)  # what B's listener does with A's notice
        pg_proxy.release()
        # This request raced the revocation and was read before it: it may pass. Its answer
        # must not outlive it.
        assert (await lookup).key_id == key[:20]
        assert b.verifier.cache_size == 1  # only the warm-up key
        assert await redis.get(b.shared.name(digest)) == TOMBSTONE.encode()  # type: ignore[union-attr]
        with pytest.raises(Unauthenticated) as caught:
            await b.verifier.verify(key)
        assert caught.value.code == "key-unknown"
        assert b.verifier.lookups == 3


async def test_last_used_is_recorded_in_batches(pg_url: str) -> None:
    """Uses are stamped in memory and written by the periodic flush, not per request."""
    settings = settings_for(pg_url, None)
    async with open_services(settings) as services:
        key = await seeded(services)
        await services.verifier.verify(key)
        batch = services.verifier.take_last_used()
        assert list(batch) == [key[:20]]
        assert services.verifier.take_last_used() == {}
        await services.store.touch_keys(batch)
        stored = await services.store.get_key(key[:20])
        assert stored is not None
        assert stored.last_used_at is not None

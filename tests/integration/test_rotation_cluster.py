"""Rotation across two real gateway processes (fast front) sharing PostgreSQL and Redis: the
old key is accepted by both during its grace and refused by both after it, although both had
it cached (in-process for 10 minutes, and in Redis) when it was rotated."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from gateway.keys import format as keyformat
from gateway.services import open_services
from gateway.settings import load_settings
from tests.integration.test_auth_support import wait_until
from tests.integration.test_multi_instance import Cluster, _new_key
from tests.integration.test_multi_instance import cluster as cluster  # the fixture

GRACE = 2.0


async def test_the_old_key_works_on_every_instance_until_the_grace_ends(cluster: Cluster) -> None:
    """A rotation with a 2 s grace (made by a third process on the same database and Redis):
    both instances accept the old and the new key during the grace and refuse the old one
    after it, with `key-expired`."""
    old = await _new_key(cluster, "rotate@example.com")
    a, b = cluster.urls
    assert (await cluster.status(a, old), await cluster.status(b, old)) == (200, 200)
    async with open_services(load_settings(environ=cluster.env), migrate=False) as services:
        key = await services.keys.get_owned(keyformat.parse(old).key_id, None)
        started = time.monotonic()
        new = (await services.keys.rotate(key, grace=timedelta(seconds=GRACE), actor=None)).text
        done = time.monotonic()
    # Inside the grace: both instances (whose caches were just invalidated) accept both keys.
    for url in (a, b):
        assert await cluster.status(url, old) == 200
        assert await cluster.status(url, new) == 200
    assert time.monotonic() < started + GRACE, "the checks above took longer than the grace"
    await asyncio.sleep(max(0.0, done + GRACE + 0.1 - time.monotonic()))
    for url in (a, b):
        async with cluster.session.get(
            url + "/api/reports/daily", headers={"X-API-KEY": old}
        ) as response:
            assert response.status == 401
            assert (await response.json(content_type=None))["code"] == "key-expired"
        assert await cluster.status(url, new) == 200


async def test_an_immediate_rotation_is_refused_by_every_instance_at_once(
    cluster: Cluster,
) -> None:
    """`--grace immediate`: both instances, which hold the old key cached for 10 minutes,
    refuse it as soon as the invalidation reaches them, and accept the new key."""
    old = await _new_key(cluster, "now@example.com")
    a, b = cluster.urls
    assert (await cluster.status(a, old), await cluster.status(b, old)) == (200, 200)
    new = await cluster.cli("keys", "rotate", keyformat.parse(old).key_id, "--grace", "immediate")
    for url in (a, b):
        assert await wait_until(lambda url=url: _refused(cluster, url, old), seconds=5)
        assert await cluster.status(url, new) == 200


async def _refused(cluster: Cluster, url: str, key: str) -> bool:
    return await cluster.status(url, key) == 401

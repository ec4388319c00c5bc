"""The failed-key budget per client address, through both data planes and the APIs.

`make_gateway` (tests/integration/conftest.py) runs each test against the aiohttp server in
this process and against a `gateway serve` process with the fast front. Lookups are counted
by the verifier's own metric, `keygate_key_cache_total{layer="database"}`, read from /metrics.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from typing import Any

from gateway.keys.format import generate
from tests.integration.gateways import MakeGateway

PROXY = (ipaddress.ip_network("127.0.0.0/8"),)


def unknown_key() -> dict[str, str]:
    """A well-formed key (checksum and all) that no one holds: it costs a lookup."""
    return {"X-API-KEY": generate().text}


async def gauge(gw: Any, name: str) -> float:
    async with gw.client.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None
    return float(found.group(1))


async def lookups(gw: Any) -> float:
    """Database lookups made by the key verifier, from /metrics (every result counted)."""
    async with gw.client.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    found = re.findall(
        r'^keygate_key_cache_total\{layer="database",result="[a-z]+"\} (\S+)$', text, re.M
    )
    return sum(float(value) for value in found)


async def status_of(gw: Any, headers: dict[str, str], path: str = "/api/x") -> int:
    async with gw.client.get(path, headers=headers) as response:
        await response.read()
        return int(response.status)


async def exhaust(gw: Any, count: int, **headers: str) -> None:
    """`count` unknown keys from one client, each refused with 401 key-unknown."""
    for _ in range(count):
        async with gw.client.get("/api/x", headers={**unknown_key(), **headers}) as response:
            assert response.status == 401
            assert (await response.json())["code"] == "key-unknown"


async def test_bad_keys_from_one_address_end_in_429_and_cost_no_more_lookups(
    make_gateway: MakeGateway,
) -> None:
    """After key_max_failures unknown keys, the address gets 429 with Retry-After, no lookup."""
    gw = await make_gateway(key_max_failures=5, key_failure_window=60)
    before = await lookups(gw)
    await exhaust(gw, 5)
    assert await lookups(gw) - before == 5
    for _ in range(20):
        async with gw.client.get("/api/x", headers=unknown_key()) as response:
            assert response.status == 429
            assert response.content_type == "application/problem+json"
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert (await response.json())["code"] == "too-many-failed-keys"
    assert await lookups(gw) - before == 5
    assert gw.upstream.received == []
    assert await gauge(gw, "keygate_key_budget_addresses") == 1


async def test_malformed_keys_count_against_the_address_too(make_gateway: MakeGateway) -> None:
    """Bad checksums, garbage tokens and bad Basic credentials spend the same budget."""
    gw = await make_gateway(key_max_failures=3, key_failure_window=60)
    text = generate().text
    wrong_checksum = text[:-1] + ("1" if text.endswith("0") else "0")
    for headers in (
        {"X-API-KEY": wrong_checksum},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic !!!"},
    ):
        assert await status_of(gw, headers) == 401
    before = await lookups(gw)
    assert await status_of(gw, unknown_key()) == 429
    assert await status_of(gw, {"Authorization": "Bearer not-a-key"}) == 429
    assert await lookups(gw) == before


async def test_a_valid_key_from_another_address_still_works(make_gateway: MakeGateway) -> None:
    """Behind a trusted proxy the X-Forwarded-For client is counted, not the proxy: another
    client behind the same proxy, and the proxy itself, keep working."""
    gw = await make_gateway(key_max_failures=4, key_failure_window=60, trusted_proxies=PROXY)
    await exhaust(gw, 4, **{"X-Forwarded-For": "198.51.100.4"})
    assert await status_of(gw, {**unknown_key(), "X-Forwarded-For": "198.51.100.4"}) == 429
    assert await status_of(gw, {**gw.auth, "X-Forwarded-For": "198.51.100.4"}) == 429
    assert await status_of(gw, {**gw.auth, "X-Forwarded-For": "198.51.100.5"}) == 200
    assert await status_of(gw, unknown_key()) == 401  # the proxy's own address: not blocked
    assert await status_of(gw, {**unknown_key(), "X-Forwarded-For": "198.51.100.5"}) == 401


async def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_gateway: MakeGateway,
) -> None:
    """Without trusted proxies, a fresh X-Forwarded-For per request does not escape the budget."""
    gw = await make_gateway(key_max_failures=3, key_failure_window=60)
    for n in range(3):
        headers = {**unknown_key(), "X-Forwarded-For": f"203.0.113.{n}"}
        assert await status_of(gw, headers) == 401
    assert await status_of(gw, {**unknown_key(), "X-Forwarded-For": "203.0.113.99"}) == 429


async def test_after_the_window_the_address_may_try_again(make_gateway: MakeGateway) -> None:
    """Once Retry-After has passed, the address's keys are looked up again."""
    gw = await make_gateway(key_max_failures=2, key_failure_window=1)
    await exhaust(gw, 2)
    async with gw.client.get("/api/x", headers=unknown_key()) as response:
        assert response.status == 429
        wait = int(response.headers["Retry-After"])
    assert wait == 1
    await asyncio.sleep(wait + 0.05)
    before = await lookups(gw)
    assert await status_of(gw, unknown_key()) == 401
    assert await lookups(gw) - before == 1
    assert await status_of(gw, gw.auth) == 200


async def test_a_good_key_does_not_reset_the_budget(make_gateway: MakeGateway) -> None:
    """A valid key between guesses buys no more guesses."""
    gw = await make_gateway(key_max_failures=3, key_failure_window=60)
    await exhaust(gw, 2)
    assert await status_of(gw, gw.auth) == 200
    await exhaust(gw, 1)
    assert await status_of(gw, gw.auth) == 200  # in memory now: served without a lookup
    assert await status_of(gw, unknown_key()) == 429


async def test_an_over_budget_address_gets_429_for_a_key_not_in_memory(
    make_gateway: MakeGateway,
) -> None:
    """Over budget, even a valid key that would need a lookup is refused before it."""
    gw = await make_gateway(key_max_failures=2, key_failure_window=60)
    await exhaust(gw, 2)
    before = await lookups(gw)
    assert await status_of(gw, gw.auth) == 429
    assert await lookups(gw) == before


async def test_the_key_apis_share_the_budget_in_their_own_shape(make_gateway: MakeGateway) -> None:
    """Greenfield and /v1 answer 429 in their own error shape, counting data-plane failures."""
    gw = await make_gateway(key_max_failures=3, key_failure_window=60)
    await exhaust(gw, 2)
    async with gw.client.get("/api/v1/api-keys/current", headers=unknown_key()) as response:
        assert response.status == 401
    before = await lookups(gw)
    async with gw.client.get("/api/v1/api-keys/current", headers=unknown_key()) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        body = await response.json()
        assert body["code"] == "too-many-failed-keys"
        assert set(body) == {"code", "message"}
    async with gw.client.get("/v1/apikeys", headers={"X-API-KEY": "apk_garbage"}) as response:
        assert response.status == 429
        assert response.content_type == "application/problem+json"
    assert await status_of(gw, unknown_key()) == 429
    assert await lookups(gw) == before

"""Rate limits and credits on both servers (in-process engine): 429 problem+json naming the
limit (`rate-limited`) or the spent credits (`quota-exhausted`), with Retry-After when waiting
helps, never reaching the upstream; the draft's RateLimit fields and, where configured, the
legacy X-RateLimit ones on every answer of a limited route; costs, per-address and per-owner
limits, and refusals that spend nothing."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from gateway.limits.credits import DAY
from gateway.services import open_services
from gateway.settings import load_settings
from gateway.state import SERVICES
from gateway.store.base import Audit, KeyQuota
from tests.integration.gateways import Gateway, MakeGateway

RATELIMIT = re.compile(r'^"(?P<name>[a-z0-9_-]+)";r=(?P<r>[0-9]+);t=(?P<t>[0-9]+)$')


async def get(gw: Gateway, path: str, headers: dict[str, str] | None = None) -> Any:
    async with gw.client.get(path, headers=gw.auth if headers is None else headers) as response:
        body = await response.read()
        return response.status, response.headers, body


def remaining(headers: Any) -> tuple[str, int]:
    match = RATELIMIT.match(headers["RateLimit"])
    assert match is not None, headers["RateLimit"]
    return match["name"], int(match["r"])


async def test_a_limit_answers_429_after_its_budget_and_spares_the_upstream(
    make_gateway: MakeGateway,
) -> None:
    """`tight: 3/m`: three requests pass with RateLimit fields counting down, the fourth is a
    429 problem+json naming the limit, with Retry-After, and the upstream never sees it."""
    gw = await make_gateway()
    seen = []
    for _ in range(3):
        status, headers, _ = await get(gw, "/limited/x")
        assert status == 200
        assert headers["RateLimit-Policy"] == '"tight";q=3;w=60'
        seen.append(remaining(headers))
    assert seen == [("tight", 2), ("tight", 1), ("tight", 0)]
    before = len(gw.upstream.received)
    status, headers, body = await get(gw, "/limited/x")
    assert status == 429
    assert len(gw.upstream.received) == before
    assert headers["Content-Type"] == "application/problem+json"
    assert 1 <= int(headers["Retry-After"]) <= 20  # one unit back every 20 s
    assert headers["RateLimit-Policy"] == '"tight";q=3;w=60'
    name, left = remaining(headers)
    assert (name, left) == ("tight", 0)
    problem = json.loads(body)
    assert problem["status"] == 429
    assert problem["code"] == "rate-limited"
    assert problem["limit"] == "tight"
    assert "X-RateLimit-Limit" not in headers


async def test_refused_requests_spend_nothing(make_gateway: MakeGateway) -> None:
    """401 (unknown key), 403 (missing permission) and 404 on limited paths leave the key's
    budget whole: all three units are still there afterwards."""
    gw = await make_gateway()
    for _ in range(5):
        assert (await get(gw, "/limited-admin/x"))[0] == 403
        assert (await get(gw, "/limited/x", {"X-API-KEY": gw.key[:-3] + "abc"}))[0] == 401
        assert (await get(gw, "/limited/x", {}))[0] == 401
    statuses = [(await get(gw, "/limited/x"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


async def test_cost_spends_units_and_a_free_route_spends_none(make_gateway: MakeGateway) -> None:
    """A cost-2 route takes two of the three units, so a second call is refused; a cost-0 route
    on the same limit still passes, and shows the unit left."""
    gw = await make_gateway()
    status, headers, _ = await get(gw, "/costly/x")
    assert (status, remaining(headers)) == (200, ("tight", 1))
    assert (await get(gw, "/costly/x"))[0] == 429
    for _ in range(5):
        status, headers, _ = await get(gw, "/free/x")
        assert (status, remaining(headers)) == (200, ("tight", 1))
    assert (await get(gw, "/limited/x"))[0] == 200
    assert (await get(gw, "/limited/x"))[0] == 429


async def test_auth_none_routes_are_limited_per_client_address(make_gateway: MakeGateway) -> None:
    """`anon: 2/m per address` on an auth: none route: two from this address, then 429."""
    gw = await make_gateway()
    statuses = [(await get(gw, "/open/x", {}))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_legacy_fields_where_configured(make_gateway: MakeGateway) -> None:
    """With `legacy_ratelimit_headers`, X-RateLimit-Limit/Remaining/Reset join the fields."""
    gw = await make_gateway(legacy_ratelimit_headers=True)
    status, headers, _ = await get(gw, "/limited/x")
    assert status == 200
    assert headers["X-RateLimit-Limit"] == "3"
    assert headers["X-RateLimit-Remaining"] == "2"
    assert 1 <= int(headers["X-RateLimit-Reset"]) <= 20


async def test_unlimited_routes_carry_no_limit_fields(make_gateway: MakeGateway) -> None:
    """A route without limits answers without RateLimit fields, however often it is called."""
    gw = await make_gateway()
    for _ in range(5):
        status, headers, _ = await get(gw, "/api/x")
        assert status == 200
        assert "RateLimit" not in headers
        assert "RateLimit-Policy" not in headers


async def test_the_owner_pool_is_shared_by_every_key_of_one_user(
    make_gateway: MakeGateway,
) -> None:
    """`pool: 4/m per owner`: two keys of one user spend one pool, while each key's own
    `tight: 3/m` counts apart; the refusal names the limit that refused."""
    gw = await make_gateway()
    if gw.server != "aiohttp":
        return await _pool_on_front(gw)
    services = gw.client.app[SERVICES]  # type: ignore[union-attr]
    owner = await services.store.get_user(gw.user_id)
    assert owner is not None
    other = await services.keys.create(
        owner=owner, creator=None, label="second", permissions=["t.read"]
    )
    second = {"X-API-KEY": other.text}
    assert [(await get(gw, "/pooled/x"))[0] for _ in range(3)] == [200] * 3
    status, headers, _ = await get(gw, "/pooled/x", second)
    assert (status, remaining(headers)) == (200, ("pool", 0))
    status, headers, body = await get(gw, "/pooled/x", second)
    assert status == 429
    assert b'"limit": "pool"' in body
    return None


async def _pool_on_front(gw: Gateway) -> None:
    """On the front (a process of its own), one key: the pool of four is the looser limit, so
    the key's own `tight: 3/m` refuses the fourth, and the report names it."""
    for _ in range(3):
        assert (await get(gw, "/pooled/x"))[0] == 200
    status, _, body = await get(gw, "/pooled/x")
    assert status == 429
    assert b'"limit": "tight"' in body


async def test_legacy_fields_follow_the_count_down_to_the_refusal(
    make_gateway: MakeGateway,
) -> None:
    """With `legacy_ratelimit_headers`, X-RateLimit-Remaining follows the RateLimit field down to
    0, and the 429 carries them too: X-RateLimit-Reset is the Retry-After, and the upstream
    never sees the refused request."""
    gw = await make_gateway(legacy_ratelimit_headers=True)
    for left in (2, 1, 0):
        status, headers, _ = await get(gw, "/limited/x")
        assert status == 200
        assert remaining(headers) == ("tight", left)
        assert headers["X-RateLimit-Limit"] == "3"
        assert headers["X-RateLimit-Remaining"] == str(left)
    before = len(gw.upstream.received)
    status, headers, body = await get(gw, "/limited/x")
    assert status == 429
    assert len(gw.upstream.received) == before
    assert json.loads(body)["code"] == "rate-limited"
    assert headers["RateLimit-Policy"] == '"tight";q=3;w=60'
    assert remaining(headers) == ("tight", 0)
    assert headers["X-RateLimit-Limit"] == "3"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["Retry-After"]) <= 20
    assert headers["X-RateLimit-Reset"] == headers["Retry-After"]


async def give_credits(gw: Gateway, quota: KeyQuota) -> None:
    """Set the test key's quota in the store, as an administrator would (the front reads the
    same SQLite database from its own process)."""
    audit = Audit("system", "key.quota", f"key:{gw.key_id}")
    if gw.server == "aiohttp":
        await gw.client.app[SERVICES].store.set_quota(quota, audit)  # type: ignore[union-attr]
        return
    assert gw.env is not None
    async with open_services(load_settings(environ=gw.env)) as services:
        await services.store.set_quota(quota, audit)


async def test_spent_credits_answer_quota_exhausted(make_gateway: MakeGateway) -> None:
    """Two credits on a cost-1 route limited to 3/m: two calls pass, the third is a 429
    `quota-exhausted` naming `credits` with the balance, without Retry-After (they never
    refill), with the route's fields (one unit of `tight` still left, legacy ones included),
    and the upstream never sees it."""
    gw = await make_gateway(legacy_ratelimit_headers=True)
    await give_credits(gw, KeyQuota(gw.key_id, credits=2))
    for left in (2, 1):
        status, headers, _ = await get(gw, "/limited/x")
        assert (status, remaining(headers)) == (200, ("tight", left))
    before = len(gw.upstream.received)
    status, headers, body = await get(gw, "/limited/x")
    assert status == 429
    assert len(gw.upstream.received) == before
    assert headers["Content-Type"] == "application/problem+json"
    assert "Retry-After" not in headers
    assert headers["RateLimit-Policy"] == '"tight";q=3;w=60'
    assert remaining(headers) == ("tight", 1)
    assert headers["X-RateLimit-Limit"] == "3"
    assert headers["X-RateLimit-Remaining"] == "1"
    problem = json.loads(body)
    assert problem["status"] == 429
    assert (problem["code"], problem["limit"], problem["credits"]) == (
        "quota-exhausted",
        "credits",
        0,
    )
    status, headers, _ = await get(gw, "/free/x")  # cost 0: no credits needed
    assert (status, remaining(headers)) == (200, ("tight", 1))


async def test_credits_that_refill_answer_with_retry_after(make_gateway: MakeGateway) -> None:
    """One credit refilled daily: the second call is a 429 `quota-exhausted` whose Retry-After
    is the time until the next UTC midnight."""
    gw = await make_gateway()
    today = f"d{int(time.time()) // DAY}"
    await give_credits(
        gw, KeyQuota(gw.key_id, credits=1, refill="daily", refill_amount=5, period=today)
    )
    assert (await get(gw, "/limited/x"))[0] == 200
    before = len(gw.upstream.received)
    status, headers, body = await get(gw, "/limited/x")
    assert status == 429
    assert len(gw.upstream.received) == before
    until_midnight = DAY - int(time.time()) % DAY
    assert abs(int(headers["Retry-After"]) - until_midnight) <= 5
    assert remaining(headers) == ("tight", 2)
    assert "X-RateLimit-Limit" not in headers
    problem = json.loads(body)
    assert (problem["code"], problem["limit"], problem["credits"]) == (
        "quota-exhausted",
        "credits",
        0,
    )

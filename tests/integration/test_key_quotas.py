"""A key's own limits and credits through /v1/apikeys and the administration API, and what
the data plane makes of them: limits never above the owner's ceiling, credits set by
administrators only, spent by the route's cost, refilled by schedule, written behind to the
store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.limits.credits import DAY
from gateway.policy.explain import explain
from gateway.store.base import Audit, KeyQuota, User
from tests.conftest import make_settings
from tests.integration.upstream import EchoUpstream
from tests.openapi_check import Gateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
BUCKAROO = ROOT / "policies" / "buckaroo.yaml"
ROUTES = """
upstreams:
  shop: {{url: "{url}"}}
limits:
  fast: 5/m
  slow: 2/m
  ceiling: 3/m
  premium: 100/m
  pool: 10/m per owner
key_limits:
  max: ceiling
  admin_max: premium
routes:
  - {{path: /sales/**, upstream: shop, permission: "sale:read", limits: [fast]}}
  - {{path: /bulk/**, upstream: shop, permission: "sale:read", limits: [fast], cost: 2}}
  - {{path: /plain/**, upstream: shop, permission: "sale:read"}}
"""
MANAGE = ["apikey:manage", "apikey:read", "sale:read"]


@pytest.fixture
async def gw(aiohttp_client: Any, sqlite_url: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with EchoUpstream() as upstream:
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES.format(url=upstream.url))
        settings = make_settings(sqlite_url, policy=(BUCKAROO, routes))
        yield await start_gateway(aiohttp_client, settings)


async def proxied(gw: Gateway, key: str, path: str = "/sales/x") -> tuple[int, Any]:
    async with gw.raw.get(path, headers={"X-API-KEY": key}) as response:
        return response.status, await response.json(content_type=None)


async def owner_and_key(gw: Gateway, *, admin: bool = False) -> tuple[User, str]:
    owner = await gw.user("shop@example.com", admin=admin, grants=MANAGE)
    return owner, (await gw.key(owner, MANAGE)).text


async def test_a_key_created_with_its_own_limit_is_held_to_it(gw: Gateway) -> None:
    """`limits: [slow]` at creation: shown with the key, and on a route whose default per-key
    limit is `fast: 5/m` the key gets two requests (its own `slow: 2/m`), then 429."""
    _, manager = await owner_and_key(gw)
    reply = await gw.api.post(
        "/v1/apikeys",
        key=manager,
        json_body={"name": "limited", "scopes": "sale:read", "limits": ["slow"]},
    )
    assert reply.status == 201, reply.text
    assert reply.json()["limits"] == ["slow"]
    assert reply.json()["credits"] is None
    key = reply.json()["key"]
    got = await gw.api.get(f"/v1/apikeys/{reply.json()['id']}", key=manager)
    assert got.json()["limits"] == ["slow"]
    results = [await proxied(gw, key) for _ in range(3)]
    assert [status for status, _ in results] == [200, 200, 429]
    assert results[2][1]["limit"] == "slow"
    # a key without limits of its own keeps the route's `fast: 5/m`
    assert [(await proxied(gw, manager))[0] for _ in range(6)] == [200] * 5 + [429]


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        (["premium"], "above what the owner's keys may carry"),
        (["fast"], "above what the owner's keys may carry"),
        (["nope"], "unknown limit 'nope'"),
        (["pool"], "per owner"),
        ("slow", "must be an array"),
    ],
)
async def test_a_limit_above_the_owners_ceiling_is_refused(
    gw: Gateway, limits: object, problem: str
) -> None:
    """A limit looser than `key_limits.max`, unknown, or not per key: 422 naming it, and no
    key is made."""
    _, manager = await owner_and_key(gw)
    reply = await gw.api.post(
        "/v1/apikeys", key=manager, json_body={"name": "x", "scopes": "sale:read", "limits": limits}
    )
    assert reply.status == 422
    assert problem in reply.text
    listed = await gw.api.get("/v1/apikeys", key=manager)
    assert listed.json()["total"] == 1  # only the manager's own key


async def test_an_administrators_keys_may_carry_up_to_admin_max(gw: Gateway) -> None:
    """`premium` is above `max` but within `admin_max`: an administrator's key may carry it."""
    _, manager = await owner_and_key(gw, admin=True)
    reply = await gw.api.post(
        "/v1/apikeys",
        key=manager,
        json_body={"name": "x", "scopes": "sale:read", "limits": ["premium"]},
    )
    assert reply.status == 201, reply.text


async def test_credits_are_set_by_administrators_only(gw: Gateway) -> None:
    """PATCH credits on one's own key: 403 for a user, whatever the body; the administration
    API sets them on the user's key, and both GETs show the balance."""
    owner, manager = await owner_and_key(gw)
    own = await gw.api.get("/v1/apikeys", key=manager)
    key_id = own.json()["items"][0]["id"]
    refused = await gw.api.patch(
        f"/v1/apikeys/{key_id}", key=manager, json_body={"credits": {"balance": 10**6}}
    )
    assert refused.status == 403
    assert refused.json()["code"] == "credits-admin-only"
    admin = await gw.user("admin@example.com", admin=True)
    admin_key = (await gw.key(admin, ["unrestricted"])).text
    body = {"credits": {"balance": 50, "refill": "monthly", "refillAmount": 50}}
    set_ = await gw.api.patch(
        f"/v1/admin/users/{owner.id}/keys/{key_id}", key=admin_key, json_body=body
    )
    assert set_.status == 200, set_.text
    expected = {"balance": 50, "refill": "monthly", "refillAmount": 50, "refillMode": "replace"}
    assert set_.json()["credits"] == expected
    assert (await gw.api.get(f"/v1/apikeys/{key_id}", key=manager)).json()["credits"] == expected


@pytest.mark.parametrize(
    "credits",
    [
        {"balance": -1},
        {"balance": "10"},
        {"balance": 1.5},
        {"balance": 10**12},
        {"balance": 5, "refill": "hourly", "refillAmount": 5},
        {"balance": 5, "refill": "daily"},
        {"balance": 5, "refillMode": "add", "refill": "daily", "refillAmount": -5},
        {"balance": 5, "extra": 1},
        [],
    ],
)
async def test_bad_credits_are_a_422(gw: Gateway, credits: object) -> None:
    """Negative, fractional, huge or non-numeric balances and bad schedules: 422."""
    owner, _ = await owner_and_key(gw)
    key_id = (await gw.services.keys.list_for(owner.id))[0].id
    admin = await gw.user("admin@example.com", admin=True)
    admin_key = (await gw.key(admin, ["unrestricted"])).text
    reply = await gw.api.patch(
        f"/v1/admin/users/{owner.id}/keys/{key_id}", key=admin_key, json_body={"credits": credits}
    )
    assert reply.status == 422, reply.text


async def set_credits(gw: Gateway, owner: User, body: dict[str, Any]) -> str:
    key_id = (await gw.services.keys.list_for(owner.id))[0].id
    admin = await gw.user("admin@example.com", admin=True)
    admin_key = (await gw.key(admin, ["unrestricted"])).text
    reply = await gw.api.patch(
        f"/v1/admin/users/{owner.id}/keys/{key_id}", key=admin_key, json_body={"credits": body}
    )
    assert reply.status == 200, reply.text
    return key_id


async def test_credits_pay_the_routes_cost_then_quota_exhausted(gw: Gateway) -> None:
    """Three credits, a cost-2 route: one call, then 429 `quota-exhausted` naming `credits`,
    without Retry-After (they never refill); a cost-2 call never pays with only one left, a
    route without limits still costs its 1; the balance is visible and written to the
    store."""
    owner, key = await owner_and_key(gw)
    key_id = await set_credits(gw, owner, {"balance": 3})
    assert (await proxied(gw, key, "/bulk/x"))[0] == 200
    async with gw.raw.get("/bulk/x", headers={"X-API-KEY": key}) as response:
        assert response.status == 429
        assert "Retry-After" not in response.headers
        problem = await response.json(content_type=None)
    assert problem["code"] == "quota-exhausted"
    assert problem["limit"] == "credits"
    assert problem["credits"] == 1
    assert (await proxied(gw, key, "/plain/x"))[0] == 200
    assert (await proxied(gw, key, "/plain/x"))[0] == 429
    shown = await gw.api.get(f"/v1/apikeys/{key_id}", key=key)
    assert shown.json()["credits"]["balance"] == 0
    await gw.services.limiter.flush()
    stored = await gw.services.store.get_quota(key_id)
    assert stored is not None
    assert stored.credits == 0


@pytest.mark.parametrize(("mode", "expected"), [("replace", 4), ("add", 6)])
async def test_credits_refill_when_a_new_period_begins(
    gw: Gateway, mode: str, expected: int
) -> None:
    """A daily refill of 5 on a balance of 2 from yesterday: `replace` makes it 5, `add` 7;
    the request then spends one. A refused request does not undo the refill."""
    owner, key = await owner_and_key(gw)
    key_id = await set_credits(
        gw, owner, {"balance": 2, "refill": "daily", "refillAmount": 5, "refillMode": mode}
    )
    store = gw.services.store
    quota = await store.get_quota(key_id)
    assert quota is not None
    yesterday = f"d{int(time.time()) // DAY - 1}"
    await store.set_quota(
        KeyQuota(key_id, (), 2, quota.refill, quota.refill_amount, quota.refill_mode, yesterday),
        Audit("test", "key.quota", f"key:{key_id}"),
    )
    await gw.services.limiter.forget(key_id)
    status, _ = await proxied(gw, key, "/plain/x")
    assert status == 200
    shown = await gw.api.get(f"/v1/apikeys/{key_id}", key=key)
    assert shown.json()["credits"]["balance"] == expected


async def test_policy_explain_shows_the_limits_and_what_is_left(gw: Gateway) -> None:
    """`policy explain` names the route's limits and credits with what is left, read without
    spending anything (explaining twice shows the same)."""
    owner, key = await owner_and_key(gw)
    key_id = await set_credits(gw, owner, {"balance": 9})
    assert (await proxied(gw, key))[0] == 200
    assert (await proxied(gw, key))[0] == 200
    first = await explain(gw.services, key_id, "GET", "/sales/x")
    again = await explain(gw.services, key_id, "GET", "/sales/x")
    assert first == again
    text = "\n".join(first)
    assert "cost:     1" in text
    assert "limit:    fast 5/m: 3 of 5 left" in text
    assert "credits:  7 left" in text
    assert "state:    as counted in this process only" in text
    assert first[-1] == "decision: ALLOW"
    plain = await explain(
        gw.services, (await gw.services.keys.list_for(owner.id))[0].id, "GET", "/plain/x"
    )
    assert "limit:" not in "\n".join(plain)

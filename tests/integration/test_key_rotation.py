"""Rotation with a grace period through the key service, `/v1/apikeys/{id}/rotate`, the key
page and the CLI: the new key inherits the old one, the old one stops at the end of the grace
(never past its own expiry), a key is rotated once, and everything is audited."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.cli import main
from gateway.errors import Conflict, Forbidden, Invalid, Unauthenticated
from gateway.keys import format as keyformat
from gateway.services import Services
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.e2e.support import form, login
from tests.e2e.support import make_user as make_page_user
from tests.integration.test_users_keys import REPORTS, VIEW, make_user, mint
from tests.openapi_check import Gateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
BUCKAROO = ROOT / "policies" / "buckaroo.yaml"


async def test_the_new_key_inherits_and_the_old_one_works_until_the_grace_ends(
    services: Services,
) -> None:
    """Same permissions, path and application; the old key is accepted during a 1 s grace and
    refused with `key-expired` after it (from the in-process cache that still holds it)."""
    owner = await make_user(services)
    old = await mint(
        services, owner, REPORTS, f"{VIEW}:S1", path_rule="/api", application_identifier="app"
    )
    assert (await services.verifier.verify(old.text)).key_id == old.record.id  # cached
    new = await services.keys.rotate(old.record, grace=timedelta(seconds=1), actor=None)
    assert new.record.permissions == old.record.permissions
    assert (new.record.path_rule, new.record.application_identifier) == ("/api", "app")
    assert new.previous is not None
    assert new.previous.replaced_by == new.record.id
    assert (await services.verifier.verify(new.text)).key_id == new.record.id
    assert (await services.verifier.verify(old.text)).key_id == old.record.id
    await asyncio.sleep(1.2)
    with pytest.raises(Unauthenticated) as refused:
        await services.verifier.verify(old.text)
    assert refused.value.code == "key-expired"
    assert (await services.verifier.verify(new.text)).key_id == new.record.id


async def test_the_grace_never_outlives_the_old_keys_expiry(services: Services) -> None:
    """A key expiring in 10 minutes rotated with a 1 h grace stops in 10 minutes; the new key
    keeps the same expiry (a rotation never extends a key's life)."""
    owner = await make_user(services)
    expires = datetime.now(UTC) + timedelta(minutes=10)
    old = await mint(services, owner, REPORTS, expires_at=expires)
    new = await services.keys.rotate(old.record, grace=timedelta(hours=1), actor=None)
    stored = await services.store.get_key(old.record.id)
    assert stored is not None
    assert stored.expires_at == expires
    assert new.record.expires_at == expires
    short = await mint(services, owner, REPORTS)
    before = datetime.now(UTC)
    await services.keys.rotate(short.record, grace=timedelta(minutes=5), actor=None)
    stored = await services.store.get_key(short.record.id)
    assert stored is not None
    assert stored.expires_at is not None
    assert (
        before + timedelta(minutes=5)
        <= stored.expires_at
        <= datetime.now(UTC) + timedelta(minutes=5)
    )


async def test_immediate_rotation_refuses_the_old_key_at_once(services: Services) -> None:
    """`immediate` (a zero grace): the old key is refused on the very next request."""
    owner = await make_user(services)
    old = await mint(services, owner, REPORTS)
    await services.verifier.verify(old.text)
    await services.keys.rotate(old.record, grace=timedelta(0), actor=None)
    with pytest.raises(Unauthenticated):
        await services.verifier.verify(old.text)


async def test_a_key_is_rotated_once_and_an_expired_key_not_at_all(services: Services) -> None:
    """Rotating the same key again is a conflict naming its successor; expired: conflict."""
    owner = await make_user(services)
    old = await mint(services, owner, REPORTS)
    new = await services.keys.rotate(old.record, grace=timedelta(hours=1), actor=None)
    again = await services.store.get_key(old.record.id)
    assert again is not None
    with pytest.raises(Conflict, match=new.record.id):
        await services.keys.rotate(again, grace=timedelta(hours=1), actor=None)
    # The stale record (not yet showing the successor) loses the race in the store.
    with pytest.raises(Conflict) as raced:
        await services.keys.rotate(old.record, grace=timedelta(hours=1), actor=None)
    assert raced.value.code == "key-already-rotated"
    assert len(await services.keys.list_for(owner.id)) == 2
    gone = await mint(services, owner, REPORTS, expires_at=datetime.now(UTC) + timedelta(seconds=1))
    await asyncio.sleep(1.1)
    with pytest.raises(Conflict) as expired:
        await services.keys.rotate(gone.record, grace=timedelta(0), actor=None)
    assert expired.value.code == "key-expired"


async def test_narrowing_keeps_a_subset_and_never_widens(services: Services) -> None:
    """`permissions` keeps some of the key's permissions; one it does not hold is refused,
    and a creator key cannot rotate to permissions beyond its own."""
    owner = await make_user(services)
    old = await mint(services, owner, REPORTS, f"{VIEW}:S1")
    with pytest.raises(Invalid):
        await services.keys.rotate(
            old.record, grace=timedelta(0), actor=None, permissions=[f"{VIEW}:S2"]
        )
    narrow = await services.keys.rotate(
        old.record, grace=timedelta(0), actor=None, permissions=[REPORTS]
    )
    assert narrow.record.permissions == (REPORTS,)
    other = await mint(services, owner, REPORTS, f"{VIEW}:S1")
    weak = await mint(services, owner, REPORTS)
    creator = await services.verifier.verify(weak.text)
    with pytest.raises(Forbidden):
        await services.keys.rotate(other.record, grace=timedelta(0), actor=creator)


async def test_rotation_is_audited_without_any_key(services: Services) -> None:
    """`key.rotate` on the old key names the successor, grace and end; `key.create` on the new
    one names where it came from; neither holds a key or hash."""
    owner = await make_user(services)
    old = await mint(services, owner, REPORTS)
    new = await services.keys.rotate(old.record, grace=timedelta(hours=2), actor=None)
    [rotate] = await services.store.list_audit(target=f"key:{old.record.id}", limit=1)
    [create] = await services.store.list_audit(target=f"key:{new.record.id}")
    assert rotate.action == "key.rotate"
    assert rotate.detail["successor"] == new.record.id
    assert rotate.detail["grace_seconds"] == 7200
    assert create.detail["rotated_from"] == old.record.id
    text = json.dumps([dict(rotate.detail), dict(create.detail)])
    for secret in (old.text, new.text, old.record.key_hash.hex(), new.record.key_hash.hex()):
        assert secret not in text


# -- /v1/apikeys/{id}/rotate ---------------------------------------------------------------


@pytest.fixture
async def gw(aiohttp_client: Any, sqlite_url: str) -> Gateway:
    return await start_gateway(aiohttp_client, make_settings(sqlite_url, policy=(BUCKAROO,)))


async def test_the_api_rotates_with_a_grace_and_says_when_the_old_key_stops(gw: Gateway) -> None:
    """POST /v1/apikeys/{id}/rotate answers 201 with the new key and `previous.expiresAt`;
    the old key's record shows `replacedBy`; both keys work during the grace."""
    owner = await gw.user("shop@example.com", grants=("sale:write", "apikey:manage"))
    manager = await gw.key(owner, ["apikey:manage", "sale:write"])
    target = await gw.key(owner, ["sale:read"])
    reply = await gw.api.post(
        f"/v1/apikeys/{target.record.id}/rotate",
        key=manager.text,
        json_body={"grace": "1h"},
    )
    assert reply.status == 201, reply.text()
    body = reply.json()
    assert body["scopes"] == "sale:read"
    assert body["previous"]["id"] == target.record.id
    stops = datetime.strptime(body["previous"]["expiresAt"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(stops.replace(tzinfo=UTC) - datetime.now(UTC) - timedelta(hours=1)) < timedelta(
        seconds=5
    )
    assert reply.headers["Location"] == f"/v1/apikeys/{body['id']}"
    old = (await gw.api.get(f"/v1/apikeys/{target.record.id}", key=manager.text)).json()
    assert old["replacedBy"] == body["id"]
    for text in (target.text, body["key"]):
        assert (await gw.services.verifier.verify(text)).status == "active"
    again = await gw.api.post(
        f"/v1/apikeys/{target.record.id}/rotate", key=manager.text, json_body={}
    )
    assert (again.status, again.json()["code"]) == (409, "key-already-rotated")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"grace": "8d"}, "grace"),
        ({"grace": "soon"}, "grace"),
        ({"grace": [1]}, "grace"),
        ({"scopes": 3}, "scopes"),
        ({"other": 1}, "other"),
    ],
)
async def test_the_api_refuses_bad_rotation_bodies(gw: Gateway, body: Any, path: str) -> None:
    """A bad grace, scopes or member is a 422 naming it; nothing is minted."""
    owner = await gw.user("shop@example.com", grants=("sale:write", "apikey:manage"))
    manager = await gw.key(owner, ["apikey:manage", "sale:write"])
    reply = await gw.api.post(
        f"/v1/apikeys/{manager.record.id}/rotate", key=manager.text, json_body=body
    )
    assert reply.status == 422
    assert path in [e["path"] for e in reply.json()["errors"]]
    assert len(await gw.services.keys.list_for(owner.id)) == 1


async def test_the_api_rotates_only_the_callers_own_keys(gw: Gateway) -> None:
    """Another user's key id is a 404, and a key without `apikey:manage` is a 403."""
    owner = await gw.user("shop@example.com", grants=("sale:write", "apikey:manage"))
    other = await gw.user("other@example.com", grants=("sale:write",))
    manager = await gw.key(owner, ["apikey:manage"])
    theirs = await gw.key(other, ["sale:read"])
    reply = await gw.api.post(f"/v1/apikeys/{theirs.record.id}/rotate", key=manager.text)
    assert reply.status == 404
    plain = await gw.key(owner, ["sale:read"])
    reply = await gw.api.post(f"/v1/apikeys/{plain.record.id}/rotate", key=plain.text)
    assert reply.status == 403


# -- the key page and the CLI ----------------------------------------------------------------


async def test_the_key_page_rotates_and_shows_when_the_old_key_stops(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """The Rotate button shows the new key once and when the old key stops; the list then
    marks the old key as replaced and offers no second rotation for it."""
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    services = client.app[SERVICES]
    alice = await make_page_user(services, "alice@example.com", grants=[REPORTS])
    await login(client)
    old = await mint(services, alice, REPORTS)
    page = await client.get("/account/api-keys")
    rotate = form(await page.text(), f"/account/api-keys/{old.record.id}/rotate")
    response = await client.post(
        f"/account/api-keys/{old.record.id}/rotate", data=rotate.data(grace="1h")
    )
    html = await response.text()
    assert response.status == 201, html
    assert "keeps working until" in html
    assert keyformat.mask(old.record.id) in html
    retired, new = await services.keys.list_for(alice.id)
    assert retired.replaced_by == new.id
    assert new.id in html
    listing = await (await client.get("/account/api-keys")).text()
    assert f"/account/api-keys/{old.record.id}/rotate" not in listing
    assert "replaced by" in listing
    bad = await client.post(f"/account/api-keys/{new.id}/rotate", data=rotate.data(grace="9d"))
    assert bad.status == 422
    assert "at most 7 days" in await bad.text()


def test_the_cli_rotates_and_refuses_a_bad_grace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gateway keys rotate KEY_ID --grace 1h` prints only the new key on stdout; a bad grace
    is one line and exit 1, before the database is touched."""
    monkeypatch.setenv("GATEWAY_MODE", "development")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_POLICY", str(ROOT / "policies" / "example.yaml"))
    assert main(["users", "create", "svc@example.com", "--service", "--grant", REPORTS]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--user", "svc@example.com", "--permission", REPORTS]) == 0
    old = capsys.readouterr().out.strip()
    old_id = keyformat.parse(old).key_id
    assert main(["keys", "rotate", old_id, "--grace", "8d"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gateway: --grace:")
    assert "\n" not in err
    assert main(["keys", "rotate", old_id, "--grace", "1h"]) == 0
    captured = capsys.readouterr()
    new = captured.out.strip()
    assert keyformat.parse(new).key_id != old_id
    assert f"replaces {old_id}" in captured.err
    assert main(["keys", "rotate", old_id]) == 1
    assert "already rotated" in capsys.readouterr().err


async def test_the_successor_carries_the_keys_limits_and_its_credits_move(
    services: Services,
) -> None:
    """The new key holds the old key's own limits and its credit balance and schedule; the old
    key keeps its limits but has no credits left during the grace, so a rotation never doubles
    what can be spent. A key without a quota rotates to a key without one."""
    from gateway.limits.quota import Credits

    owner = await make_user(services)
    old = await mint(services, owner, REPORTS)
    await services.quota.set(
        old.record.id,
        actor="cli",
        limits=("standard",),
        credits=Credits(balance=40, refill="daily", amount=100),
    )
    new = await services.keys.rotate(old.record, grace=timedelta(hours=1), actor=None)
    moved = await services.quota.get(new.record.id)
    assert moved is not None
    assert (moved.limits, moved.credits, moved.refill, moved.refill_amount) == (
        ("standard",),
        40,
        "daily",
        100,
    )
    assert await services.quota.balance(moved) == 40
    left = await services.quota.get(old.record.id)
    assert left is not None
    assert (left.limits, left.credits, left.refill) == (("standard",), 0, None)
    assert await services.quota.balance(left) == 0

    plain = await mint(services, owner, REPORTS)
    plain_new = await services.keys.rotate(plain.record, grace=timedelta(0), actor=None)
    assert await services.quota.get(plain_new.record.id) is None

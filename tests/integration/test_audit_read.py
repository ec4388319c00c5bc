"""The audit log, readable: `GET /v1/admin/audit` (filters and cursor paging), the key
owner's `GET /v1/apikeys/{id}/audit`, `gateway audit` and the Activity page; no entry ever
shows a key, password or hash."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.cli import main
from gateway.keys import format as keyformat
from gateway.state import SERVICES
from gateway.store.base import Audit, AuditQuery
from tests.conftest import make_settings
from tests.e2e.support import PASSWORD, login
from tests.e2e.support import make_user as make_page_user
from tests.openapi_check import Gateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
BUCKAROO = ROOT / "policies" / "buckaroo.yaml"


@pytest.fixture
async def gw(aiohttp_client: Any, sqlite_url: str) -> Gateway:
    return await start_gateway(aiohttp_client, make_settings(sqlite_url, policy=(BUCKAROO,)))


async def history(gw: Gateway) -> dict[str, Any]:
    """An admin, a merchant with keys, and a few changes by several actors."""
    admin = await gw.user("root@example.com", admin=True)
    root = await gw.key(admin, ["unrestricted"])
    shop = await gw.user("shop@example.com", grants=("sale:write", "apikey:manage"))
    other = await gw.user("other@example.com", grants=("sale:read",))
    keys = [await gw.key(shop, ["sale:read"]) for _ in range(5)]
    other_key = await gw.key(other, ["sale:read"])
    for key in keys[:3]:
        await gw.services.keys.set_status(key.record, "disabled", actor=None)
    await gw.services.keys.rotate(keys[4].record, grace=timedelta(hours=1), actor=None)
    return {"root": root, "shop": shop, "keys": keys, "other_key": other_key}


async def test_admin_audit_filters_by_user_key_action_and_actor(gw: Gateway) -> None:
    """Each filter narrows the entries to those matching it; filters combine."""
    h = await history(gw)
    root = h["root"].text
    shop, keys = h["shop"], h["keys"]

    async def ids(**query: str) -> list[dict[str, Any]]:
        reply = await gw.api.get("/v1/admin/audit", key=root, params=query)
        assert reply.status == 200, reply.text()
        return list(reply.json()["items"])

    mine = await ids(user="shop@example.com")
    assert mine
    assert all(e["subjectUser"] == shop.id for e in mine)
    assert {e["target"] for e in mine} >= {f"key:{k.record.id}" for k in keys}
    assert "key:" + h["other_key"].record.id not in {e["target"] for e in mine}
    disabled = await ids(action="key.disable")
    assert [e["target"] for e in disabled] == [f"key:{k.record.id}" for k in reversed(keys[:3])]
    one = await ids(key=keys[4].record.id)
    assert [e["action"] for e in one] == ["key.rotate", "key.create"]
    assert {e["actor"] for e in await ids(actor="cli", action="key.disable")} == {"cli"}
    assert await ids(actor="user:nobody") == []
    later = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await ids(since=later) == []
    assert len(await ids(until=later, action="key.disable")) == 3


async def test_admin_audit_pages_with_a_cursor_that_does_not_shift(gw: Gateway) -> None:
    """Pages of 4 walk every entry exactly once, newest first, even while new entries are
    written between pages; the last page has no nextCursor."""
    h = await history(gw)
    root = h["root"].text
    seen: list[int] = []
    cursor: str | None = None
    while True:
        query = {"limit": "4", **({"cursor": cursor} if cursor else {})}
        reply = await gw.api.get("/v1/admin/audit", key=root, params=query)
        body = reply.json()
        assert len(body["items"]) <= 4
        seen += [e["id"] for e in body["items"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
        await gw.services.store.add_audit(Audit("test", "test.noise", "resource:x/y"))
    total = await gw.services.store.query_audit(AuditQuery(limit=1000, action=None))
    noise = [r.id for r in total if r.action == "test.noise"]
    assert seen == sorted(seen, reverse=True)
    assert sorted(seen) == sorted(r.id for r in total if r.id not in noise)


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"cursor": "-1"}, "cursor"),
        ({"color": "red"}, "color"),
        ({"actor": "a\x00b"}, "actor"),
        ({"action": "x" * 400}, "action"),
    ],
)
async def test_admin_audit_refuses_bad_filters(
    gw: Gateway, query: dict[str, str], name: str
) -> None:
    """A bad time, limit, cursor or an unknown filter is a 422 naming it."""
    admin = await gw.user("root@example.com", admin=True)
    root = await gw.key(admin, ["unrestricted"])
    reply = await gw.api.get("/v1/admin/audit", key=root.text, params=query)
    assert reply.status == 422
    assert name in [e["path"] for e in reply.json()["errors"]]


async def test_admin_audit_needs_unrestricted(gw: Gateway) -> None:
    """A merchant's key cannot read the whole log."""
    shop = await gw.user("shop@example.com", grants=("sale:write", "apikey:manage"))
    manager = await gw.key(shop, ["apikey:manage"])
    assert (await gw.api.get("/v1/admin/audit", key=manager.text)).status == 403


async def test_a_key_owner_reads_his_keys_audit_and_no_one_elses(gw: Gateway) -> None:
    """GET /v1/apikeys/{id}/audit: the key's entries for its owner; another's key is a 404."""
    h = await history(gw)
    manager = await gw.key(h["shop"], ["apikey:manage"])
    key = h["keys"][0]
    reply = await gw.api.get(f"/v1/apikeys/{key.record.id}/audit", key=manager.text)
    assert reply.status == 200, reply.text()
    assert [e["action"] for e in reply.json()["items"]] == ["key.disable", "key.create"]
    other = h["other_key"].record.id
    assert (await gw.api.get(f"/v1/apikeys/{other}/audit", key=manager.text)).status == 404


async def test_no_entry_shows_a_key_password_or_hash(gw: Gateway) -> None:
    """After keys are made, rotated, revoked and a password is set, the whole log (API view)
    holds none of them, even a detail member named like a secret written by mistake."""
    h = await history(gw)
    user = await gw.services.users.create(
        email="person@example.com", password=PASSWORD, actor="cli", grants=["sale:read"]
    )
    await gw.services.users.set_password(user, "another long password", actor="cli")
    await gw.services.store.add_audit(
        Audit("test", "test.mistake", f"user:{user.id}", {"password": PASSWORD, "ok": 1})
    )
    reply = await gw.api.get("/v1/admin/audit", key=h["root"].text, params={"limit": "200"})
    text = json.dumps(reply.json())
    secrets = [PASSWORD, "another long password"]
    for new in [h["root"], *h["keys"], h["other_key"]]:
        secrets += [new.text, new.record.key_hash.hex()]
    stored = await gw.services.store.get_user(user.id)
    assert stored is not None
    assert stored.password_hash
    secrets.append(stored.password_hash)
    for secret in secrets:
        assert secret not in text
    mistake = [e for e in reply.json()["items"] if e["action"] == "test.mistake"]
    assert mistake[0]["detail"] == {"ok": 1}


async def test_the_activity_page_shows_the_persons_entries_paged(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """Activity lists what happened to the person's keys, newest first, with an Older link;
    another person's keys never appear."""
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    services = client.app[SERVICES]
    alice = await make_page_user(services, "alice@example.com", grants=["demo.reports.read"])
    bob = await make_page_user(services, "bob@example.com", grants=["demo.reports.read"])
    await login(client)
    mine = [
        await services.keys.create(
            owner=alice, creator=None, label=f"k{i}", permissions=["demo.reports.read"]
        )
        for i in range(3)
    ]
    theirs = await services.keys.create(
        owner=bob, creator=None, label="b", permissions=["demo.reports.read"]
    )
    page = await client.get("/account/activity?limit=2")
    html = await page.text()
    assert page.status == 200
    assert f"key:{mine[2].record.id}" in html
    assert f"key:{mine[0].record.id}" not in html
    assert theirs.record.id not in html
    assert 'id="older"' in html
    cursor = html.split("/account/activity?cursor=")[1].split("&")[0].split('"')[0]
    older = await (await client.get(f"/account/activity?cursor={cursor}&limit=2")).text()
    assert f"key:{mine[0].record.id}" in older
    one = await (await client.get(f"/account/activity?key={mine[1].record.id}")).text()
    assert f"key:{mine[1].record.id}" in one
    assert f"key:{mine[2].record.id}" not in one
    bad = await client.get("/account/activity?cursor=x")
    assert bad.status == 422


def test_the_cli_prints_filtered_entries_and_the_next_cursor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gateway audit --action --limit` prints one line per entry and, on stderr, the cursor
    of the next page; a bad filter is one line and exit 1."""
    monkeypatch.setenv("GATEWAY_MODE", "development")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_POLICY", str(ROOT / "policies" / "example.yaml"))
    assert main(["users", "create", "svc@example.com", "--service"]) == 0
    for _ in range(3):
        assert main(["keys", "create", "--user", "svc@example.com"]) == 0
    keys = [
        keyformat.parse(line).key_id
        for line in capsys.readouterr().out.split()
        if line.startswith("apk_")
    ]
    assert main(["audit", "--action", "key.create", "--limit", "2", "--since", "1h"]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert [line.split()[4] for line in lines] == [f"key:{k}" for k in reversed(keys[1:])]
    assert "--cursor" in out.err
    cursor = out.err.split("--cursor")[1].split()[0]
    assert main(["audit", "--action", "key.create", "--cursor", cursor]) == 0
    assert capsys.readouterr().out.split()[4] == f"key:{keys[0]}"
    assert main(["audit", "--limit", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gateway: --limit")
    assert "\n" not in err

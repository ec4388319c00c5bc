"""`gateway import btcpay`, run as a real command, from a PostgreSQL database laid out like
BTCPay Server's and from JSON exports; then the imported keys on a real gateway (both HTTP
servers): accepted on the data plane and the Greenfield API, random 40-hex strings refused,
and no key in any output or log."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.services import open_services
from gateway.settings import load_settings, with_secret
from tests import services as test_services
from tests.integration.btcpay import LEGACY, blob2, btcpay_database, old_blob
from tests.integration.faults import run_cli
from tests.integration.upstream import EchoUpstream, free_port

ROOT = Path(__file__).resolve().parents[2]
BTCPAY_POLICY = ROOT / "policies" / "btcpay-greenfield.yaml"
ROUTES = """
upstreams:
  shop: {{url: "{url}", connect_timeout: 2, read_timeout: 2}}
routes:
  - {{path: "/api/v1/stores/{{storeId}}/invoices", methods: [GET], upstream: shop,
      permission: "btcpay.store.canviewinvoices:{{storeId}}"}}
"""
SECONDS = 60


def hexkey() -> str:
    return secrets.token_hex(20)


@pytest.fixture
async def btcpay_url(pg_server: str) -> AsyncIterator[str]:
    """A throwaway database on the shared server, for BTCPay's tables."""
    name = f"btcpay_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield test_services.database_url(pg_server, name)
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def environment(
    tmp_path: Path, database_url: str, policy: list[Path], **more: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_MODE="development",
        GATEWAY_DATA_DIR=str(tmp_path / "var"),
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_POLICY=",".join(map(str, policy)),
        PYTHONPATH=str(ROOT),
    )
    env.update(more)
    return env


async def gateway(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return await run_cli(env, *args, seconds=SECONDS)


async def imported(env: dict[str, str], *args: str) -> dict[str, Any]:
    status, out, err = await gateway(env, "import", "btcpay", *args, "--json")
    assert status == 0, err
    assert "Traceback" not in err
    data: dict[str, Any] = json.loads(out)
    return data


class Keys:
    """The keys of the BTCPay database below, by what they are."""

    def __init__(self) -> None:
        self.shop, self.zipped, self.plain, self.admin = hexkey(), hexkey(), hexkey(), hexkey()
        self.bitpay = hexkey()
        self.short = hexkey()[:39]
        self.nonhex = "x" + hexkey()[1:]
        self.bad_blob, self.orphan, self.no_email = hexkey(), hexkey(), hexkey()
        self.disabled = hexkey()

    def all(self) -> list[str]:
        return list(vars(self).values())


async def btcpay_with_keys(url: str) -> Keys:
    db = await btcpay_database(url)
    keys = Keys()
    try:
        await db.user("u-owner", "owner@example.com")
        await db.user("u-admin", "admin@example.com", admin=True)
        await db.user("u-ghost", None)
        for sid, name in (("S1", "Main shop"), ("S2", "Second shop"), ("S3", "Books")):
            await db.store(sid, name)
        await db.role("S3::Accountant", "S3", "Accountant", ["btcpay.store.canviewreports"])
        await db.member("u-owner", "S1", "Owner")
        await db.member("u-owner", "S2", "Guest")
        await db.member("u-owner", "S3", "S3::Accountant")
        shop = ["btcpay.store.canviewinvoices", "btcpay.store.canmodifystoresettings:S1"]
        await db.key(
            keys.shop,
            "u-owner",
            "shop sync",
            blob2=blob2([*shop, "btcpay.future.canfly"], app="shop-sync", authority="shop.example"),
        )
        await db.key(
            keys.zipped,
            "u-owner",
            "old zipped",
            blob=old_blob(["btcpay.store.canviewinvoices:S2"], zipped=True),
        )
        await db.key(
            keys.plain,
            "u-owner",
            None,
            blob=old_blob(["btcpay.user.canviewprofile"], zipped=False),
        )
        await db.key(keys.admin, "u-admin", "users", blob2=blob2(["btcpay.server.canviewusers"]))
        await db.key(keys.bitpay, None, "bitpay", type_=LEGACY, store="S1")
        await db.key(keys.short, "u-owner", "short", blob2=blob2([]))
        await db.key(keys.nonhex, "u-owner", "nonhex", blob2=blob2([]))
        await db.key(keys.bad_blob, "u-owner", "bad blob", blob=b"\x1f\x8b not gzip")
        await db.key(keys.orphan, None, "orphan", blob2=blob2([]))
        await db.key(keys.no_email, "u-ghost", "ghost", blob2=blob2([]))
        await db.user("u-gone", "gone@example.com", disabled=True)
        await db.key(keys.disabled, "u-gone", "gone", blob2=blob2([]))
    finally:
        await db.conn.close()
    return keys


async def test_import_from_btcpay_database(tmp_path: Path, btcpay_url: str, store_url: str) -> None:
    """From BTCPay's database: a dry run writes nothing; the import writes each good key
    hashed, legacy-marked and audited, with its owner's grants and stores, and skips each bad
    row with its reason; a second run imports nothing new and says so; no key is printed."""
    keys = await btcpay_with_keys(btcpay_url)
    env = environment(tmp_path, store_url, [BTCPAY_POLICY])

    dry = await imported(env, btcpay_url, "--dry-run")
    assert dry["dryRun"] is True
    assert len(dry["keys"]["imported"]) == 4
    settings = with_secret(load_settings(environ=env), announce=print)
    async with open_services(settings) as s:
        assert await s.store.list_users() == []
        assert [a for a in await s.store.list_audit() if a.action != "secret.adopt"] == []

    status, out, err = await gateway(env, "import", "btcpay", btcpay_url)
    assert status == 0, err
    assert "keys: 4 imported, 0 already imported, 7 skipped" in out
    for text in keys.all():
        assert text not in out + err

    data = await imported(env, btcpay_url)
    assert data["dryRun"] is False
    assert data["keys"]["imported"] == []
    assert len(data["keys"]["alreadyImported"]) == 4
    skipped = {s.get("label"): s["reason"] for s in data["keys"]["skipped"]}
    assert skipped == {
        "bitpay": "a store's BitPay-compatible legacy key, not a Greenfield key",
        "short": "the key is 39 characters long; a BTCPay key is 40 hex characters",
        "nonhex": "the key is not hexadecimal",
        "bad blob": "the key's permissions blob cannot be read",
        "orphan": "the key has no userId",
        "ghost": "the user 'u-ghost' has no usable email",
        "gone": "the user is disabled in BTCPay (his keys do not work there)",
    }
    status, out, _ = await gateway(env, "import", "btcpay", btcpay_url)
    assert "nothing new to import" in out

    async with open_services(settings) as s:
        owner = await s.users.find("owner@example.com")
        admin = await s.users.find("admin@example.com")
        assert owner.password_hash is None
        assert not owner.is_admin
        assert not admin.is_admin
        assert set(owner.grants) == {
            "btcpay.store.canviewinvoices:S1",
            "btcpay.store.canviewinvoices:S2",
            "btcpay.store.canmodifystoresettings:S1",
            "btcpay.user.canviewprofile",
        }
        assert admin.grants == ("btcpay.server.canviewusers",)
        mine = {k.label: k for k in await s.store.list_keys(owner.id)}
        assert set(mine) == {"shop sync", "old zipped", ""}
        assert {k.legacy for k in mine.values()} == {"btcpay"}
        assert mine["shop sync"].permissions == (
            "btcpay.store.canviewinvoices",
            "btcpay.store.canmodifystoresettings:S1",
        )
        assert mine["shop sync"].application_identifier == "shop-sync"
        assert mine["shop sync"].redirect_origin == "https://shop.example"
        found = await s.store.find_key_by_hash(s.hasher.digest(keys.shop))
        assert found is not None
        assert found.key.id == mine["shop sync"].id
        stores = {r.id: r.name for r in await s.store.list_resources("store")}
        assert stores == {"S1": "Main shop", "S2": "Second shop"}
        audit = await s.store.list_audit(limit=100)
        imports = [a for a in audit if a.action == "key.import"]
        assert len(imports) == 4
        assert all(a.detail["legacy"] == "btcpay" for a in imports)
        assert [a.detail["keys"] for a in audit if a.action == "import.btcpay"] == [4]
        dump = json.dumps([[a.actor, a.target, dict(a.detail)] for a in audit])
        for text in keys.all():
            assert text not in dump

    status, out, _ = await gateway(env, "keys", "list", "--user", "owner@example.com")
    assert status == 0
    assert out.count("legacy=btcpay") == 3


async def test_import_from_json_exports(tmp_path: Path, sqlite_url: str) -> None:
    """From a JSON file or stdin: malformed rows are reported, the rest imported; a broken
    export is one line and exit 1, never a traceback, and nothing is written."""
    env = environment(tmp_path, sqlite_url, [BTCPAY_POLICY])
    good, dup, unknown_user = hexkey(), hexkey(), hexkey()
    doc = {
        "format": "btcpay-export",
        "version": 1,
        "users": [{"id": "u1", "email": "owner@example.com"}],
        "stores": [{"id": "S1", "name": "Main shop"}],
        "storeUsers": [{"userId": "u1", "storeId": "S1", "role": "Owner"}],
        "apiKeys": [
            {
                "key": good,
                "userId": "u1",
                "label": "good",
                "permissions": ["btcpay.store.canviewinvoices:S1", "btcpay.store.nosuchthing"],
            },
            {"key": good, "userId": "u1", "label": "again"},
            {"key": dup[:30], "userId": "u1", "label": "short"},
            {"key": unknown_user, "userId": "u404", "label": "stranger"},
            "not an object",
        ],
    }
    export = tmp_path / "export.json"
    export.write_text(json.dumps(doc))
    data = await imported(env, str(export))
    assert [k["label"] for k in data["keys"]["imported"]] == ["good"]
    assert data["permissionsDropped"][0]["reason"].startswith("btcpay.store.nosuchthing:")
    assert sorted(s["reason"] for s in data["keys"]["skipped"]) == [
        "not a JSON object",
        "the key is 30 characters long; a BTCPay key is 40 hex characters",
        "the same key as apiKeys[0]",
        "unknown user 'u404'",
    ]

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "import",
        "btcpay",
        "-",
        "--json",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(doc).encode()), SECONDS)
    assert proc.returncode == 0, err
    assert len(json.loads(out)["keys"]["alreadyImported"]) == 1

    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "btcpay-export", "version": 1, "apiKeys": [')
    for source, why in (
        (str(broken), "not valid JSON"),
        (str(tmp_path / "missing.json"), "No such file"),
        ("postgresql://postgres@127.0.0.1:1/btcpay", "cannot connect"),
    ):
        status, out, err = await gateway(env, "import", "btcpay", source)
        assert status == 1
        assert "Traceback" not in err
        assert err.splitlines()[-1].startswith("gateway: ")
        assert why in err

    bare = environment(tmp_path, sqlite_url, [ROOT / "policies" / "example.yaml"])
    status, _, err = await gateway(bare, "import", "btcpay", str(export))
    assert status == 1
    assert "no BTCPay permissions" in err


async def serve(env: dict[str, str], log: Path) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    async with asyncio.timeout(30), aiohttp.ClientSession() as session:
        while True:
            assert proc.returncode is None, "the gateway exited"
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as reply:
                    if reply.status == 200:
                        return proc, port
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("fast", ["true", "false"], ids=["front", "aiohttp"])
async def test_imported_keys_work_on_the_data_plane_and_greenfield(
    tmp_path: Path, sqlite_url: str, fast: str
) -> None:
    """With accept_legacy_keys on, an imported key is allowed on its stores and refused on
    others, is its own `current` key on Greenfield and can revoke itself; a random 40-hex
    string is an unknown key; with the setting off the same key is malformed (no lookup).
    Neither the gateway's log nor the importer's output holds a key."""
    shop, random_key = hexkey(), hexkey()
    export = tmp_path / "export.json"
    export.write_text(
        json.dumps(
            {
                "format": "btcpay-export",
                "version": 1,
                "users": [{"id": "u1", "email": "owner@example.com"}],
                "storeUsers": [
                    {"userId": "u1", "storeId": "S1", "role": "Owner"},
                    {"userId": "u1", "storeId": "S2", "role": "Guest"},
                ],
                "apiKeys": [
                    {
                        "key": shop,
                        "userId": "u1",
                        "label": "shop",
                        "permissions": ["btcpay.store.canviewinvoices"],
                    }
                ],
            }
        )
    )
    log = tmp_path / "gateway.log"
    async with EchoUpstream() as upstream:
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES.format(url=upstream.url))
        env = environment(
            tmp_path,
            sqlite_url,
            [BTCPAY_POLICY, routes],
            GATEWAY_FAST_DATA_PLANE=fast,
            GATEWAY_LOG_LEVEL="DEBUG",
            GATEWAY_ACCESS_LOG="true",
        )
        status, out, err = await gateway(env, "import", "btcpay", str(export))
        assert status == 0, err
        assert "accept_legacy_keys is off" in out  # the operator is told what to do next

        off, port = await serve(env, log)
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                token = {"Authorization": f"token {shop}"}
                async with http.get("/api/v1/stores/S1/invoices", headers=token) as reply:
                    assert reply.status == 401
                    assert (await reply.json())["code"] == "key-malformed"
        finally:
            await stop(off)

        on, port = await serve({**env, "GATEWAY_ACCEPT_LEGACY_KEYS": "true"}, log)
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                for store, expected in (("S1", 200), ("S2", 200), ("S3", 403)):
                    async with http.get(f"/api/v1/stores/{store}/invoices", headers=token) as r:
                        assert r.status == expected, store
                assert len(upstream.received) == 2
                assert upstream.received[-1].header("Authorization") == []
                async with http.get(
                    "/api/v1/stores/S1/invoices", headers={"X-API-KEY": shop}
                ) as reply:
                    assert reply.status == 200
                async with http.get(
                    "/api/v1/stores/S1/invoices", headers={"X-API-KEY": random_key}
                ) as reply:
                    assert reply.status == 401
                    assert (await reply.json())["code"] == "key-unknown"
                async with http.get("/api/v1/api-keys/current", headers=token) as reply:
                    assert reply.status == 200
                    assert await reply.json() == {
                        "apiKey": shop,
                        "label": "shop",
                        "permissions": ["btcpay.store.canviewinvoices"],
                    }
                async with http.get(
                    "/api/v1/api-keys/current", headers={"Authorization": f"token {random_key}"}
                ) as reply:
                    assert reply.status == 401
                async with http.delete("/api/v1/api-keys/current", headers=token) as reply:
                    assert reply.status == 200
                async with http.get("/api/v1/stores/S1/invoices", headers=token) as reply:
                    assert reply.status == 401
        finally:
            await stop(on)
    text = log.read_text(errors="replace")
    assert "GET /api/v1/stores/S1/invoices" in text  # the access log was on
    for key in (shop, random_key):
        assert key not in text
        assert key not in out + err


async def test_the_documented_export_query_feeds_the_importer(
    tmp_path: Path, btcpay_url: str, sqlite_url: str
) -> None:
    """deploy/btcpay-export.sql, run on BTCPay's database, writes an export the importer reads
    like the database itself; keys whose permissions sit in the old Blob column are reported
    (the database URL reads those), never imported without their permissions."""
    keys = await btcpay_with_keys(btcpay_url)
    conn = await asyncpg.connect(btcpay_url)
    try:
        text = await conn.fetchval((ROOT / "deploy" / "btcpay-export.sql").read_text())
    finally:
        await conn.close()
    export = tmp_path / "export.json"
    export.write_text(text)
    env = environment(tmp_path, sqlite_url, [BTCPAY_POLICY])
    data = await imported(env, str(export), "--dry-run")
    assert sorted(k["label"] for k in data["keys"]["imported"]) == ["shop sync", "users"]
    [shop] = [k for k in data["keys"]["imported"] if k["label"] == "shop sync"]
    assert shop["permissions"] == [
        "btcpay.store.canviewinvoices",
        "btcpay.store.canmodifystoresettings:S1",
    ]
    reasons = {s.get("label"): s["reason"] for s in data["keys"]["skipped"]}
    assert reasons["old zipped"] == "permissions must be a list"
    assert reasons["gone"] == "the user is disabled in BTCPay (his keys do not work there)"
    assert "bitpay" not in reasons  # BitPay-compatible keys are left out of the export
    # short, nonhex, orphan, ghost, gone, and the three whose permissions are in old blobs
    assert len(data["keys"]["skipped"]) == 8
    assert set(data["users"]["created"]) == {"owner@example.com", "admin@example.com"}
    assert keys.shop not in json.dumps(data)

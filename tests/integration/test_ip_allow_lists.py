"""IP allow-lists per key on both servers (aiohttp and the fast front), behind a trusted proxy
and with a spoofed X-Forwarded-For from an untrusted peer; and where they can be set: the
key service (within the owner's list), /v1/apikeys, the admin API and the CLI."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.errors import Forbidden, Invalid
from gateway.services import Services, open_services
from gateway.settings import load_settings
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.e2e.support import form, login
from tests.e2e.support import make_user as make_page_user
from tests.integration.gateways import Gateway, MakeGateway
from tests.integration.test_users_keys import REPORTS, make_user, mint
from tests.openapi_check import start_gateway

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
OFFICE = "203.0.113.0/24"


@contextlib.asynccontextmanager
async def services_of(gw: Gateway) -> AsyncIterator[Services]:
    """The gateway's services: its own (aiohttp) or a second process's on its database."""
    if gw.env is None:
        yield gw.client.app[SERVICES]  # type: ignore[union-attr]  # aiohttp's TestClient
        return
    async with open_services(load_settings(environ=gw.env), migrate=False) as services:
        yield services


async def restrict(gw: Gateway, networks: list[str] | None, owner: list[str] | None = None) -> None:
    """Give the gateway's key (and its owner) allow-lists, before any request used the key."""
    async with services_of(gw) as services:
        user = await services.users.find(gw.user_id)
        await services.users.set_networks(user, owner, actor="test")
        key = await services.keys.get_owned(gw.key_id, None)
        await services.keys.set_networks(key, networks, actor=None)


async def call(gw: Gateway, forwarded: str | None = None) -> tuple[int, Any]:
    headers = dict(gw.auth)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    async with gw.client.get("/api/x", headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_behind_a_trusted_proxy_the_forwarded_client_is_checked(
    make_gateway: MakeGateway,
) -> None:
    """With the peer a trusted proxy, the nearest untrusted X-Forwarded-For hop is the client:
    inside the list it is forwarded, outside it is a 403 `ip-not-allowed` naming nothing of the
    list, and the upstream never sees it."""
    gw = await make_gateway(trusted_proxies=LOOPBACK)
    await restrict(gw, [OFFICE, "2001:db8::/32"])
    assert (await call(gw, "198.51.100.1, 203.0.113.7"))[0] == 200
    assert (await call(gw, "2001:db8::5"))[0] == 200
    seen = len(gw.upstream.received)
    status, body = await call(gw, "203.0.113.7, 198.51.100.1")
    assert (status, body["code"]) == (403, "ip-not-allowed")
    assert "203.0.113" not in str(body)
    assert "198.51.100" not in str(body)
    assert len(gw.upstream.received) == seen


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_gateway: MakeGateway,
) -> None:
    """No trusted proxies: the socket peer (127.0.0.1) is the client, whatever X-Forwarded-For
    claims; a list holding it allows, a list naming only the claimed address refuses."""
    gw = await make_gateway()
    await restrict(gw, [OFFICE])
    status, body = await call(gw, "203.0.113.7")
    assert (status, body["code"]) == (403, "ip-not-allowed")


async def test_the_owners_list_applies_to_a_key_without_one(make_gateway: MakeGateway) -> None:
    """An owner limited to loopback by an administrator: his key (no list of its own) works
    from 127.0.0.1; limited to another network, the same key is refused."""
    gw = await make_gateway()
    await restrict(gw, None, owner=["127.0.0.0/8"])
    assert (await call(gw))[0] == 200


async def test_the_owners_list_refuses_a_key_used_from_elsewhere(make_gateway: MakeGateway) -> None:
    """The owner's list bounds the key at request time: outside it, 403 `ip-not-allowed`."""
    gw = await make_gateway()
    await restrict(gw, None, owner=[OFFICE])
    status, body = await call(gw)
    assert (status, body["code"]) == (403, "ip-not-allowed")


# -- setting the lists ------------------------------------------------------------------------


async def test_a_key_list_must_lie_within_the_owners(services: Services) -> None:
    """Inside the owner's list: kept (canonical); outside: 403 `network-not-allowed`; not a
    network, or an empty list: 422 naming allowedNetworks."""
    owner = await make_user(services)
    owner = await services.users.set_networks(owner, [OFFICE], actor="cli")
    key = await mint(services, owner, REPORTS, allowed_networks=["203.0.113.9/25"])
    assert key.record.allowed_networks == ("203.0.113.0/25",)
    with pytest.raises(Forbidden) as beyond:
        await mint(services, owner, REPORTS, allowed_networks=["198.51.100.0/24"])
    assert beyond.value.code == "network-not-allowed"
    for bad in (["nope"], []):
        with pytest.raises(Invalid) as invalid:
            await mint(services, owner, REPORTS, allowed_networks=bad)
        assert invalid.value.errors[0][0] == "allowedNetworks"
    rotated = await services.keys.rotate(key.record, grace=timedelta(0), actor=None)
    assert rotated.record.allowed_networks == ("203.0.113.0/25",)


async def test_the_apis_set_and_show_the_lists(aiohttp_client: Any, sqlite_url: str) -> None:
    """POST/PATCH /v1/apikeys take `allowedNetworks` (null clears it); the admin API sets the
    owner's list; a key used from outside its list cannot manage keys either."""
    gw = await start_gateway(
        aiohttp_client, make_settings(sqlite_url, policy=(ROOT / "policies" / "buckaroo.yaml",))
    )
    admin = await gw.user("root@example.com", admin=True)
    root = await gw.key(admin, ["unrestricted"])
    owner = await gw.user("shop@example.com", grants=("sale:write", "apikey:manage"))
    manager = await gw.key(owner, ["apikey:manage", "sale:write"])
    reply = await gw.api.post(
        "/v1/apikeys",
        key=manager.text,
        json_body={"name": "office", "scopes": "sale:read", "allowedNetworks": ["127.0.0.1"]},
    )
    assert reply.status == 201, reply.text()
    assert reply.json()["allowedNetworks"] == ["127.0.0.1/32"]
    key_id = reply.json()["id"]
    reply = await gw.api.patch(
        f"/v1/apikeys/{key_id}", key=manager.text, json_body={"allowedNetworks": None}
    )
    assert reply.json()["allowedNetworks"] is None
    reply = await gw.api.patch(
        f"/v1/admin/users/{owner.id}", key=root.text, json_body={"allowedNetworks": [OFFICE]}
    )
    assert reply.status == 200, reply.text()
    assert reply.json()["allowedNetworks"] == [OFFICE]
    # The owner's list now excludes 127.0.0.1, where this test's client calls from.
    reply = await gw.api.get("/v1/apikeys", key=manager.text)
    assert (reply.status, reply.json()["code"]) == (403, "ip-not-allowed")
    reply = await gw.api.patch(
        f"/v1/admin/users/{owner.id}", key=root.text, json_body={"allowedNetworks": ["bad"]}
    )
    assert reply.status == 422


async def test_the_create_page_takes_networks(aiohttp_client: Any, sqlite_url: str) -> None:
    """The create form's networks field sets the list (shown on the key list); a bad entry is
    the form again with the reason; one outside the owner's list is refused the same way."""
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    services = client.app[SERVICES]
    alice = await make_page_user(services, "alice@example.com", grants=[REPORTS])
    await login(client)

    async def create(networks: str) -> Any:
        page = await client.get("/account/api-keys/new")
        data = form(await page.text(), "/account/api-keys").data(
            label="office", permission=[REPORTS], networks=networks
        )
        return await client.post("/account/api-keys", data=data, allow_redirects=False)

    assert (await create("203.0.113.0/24, 2001:db8::/32")).status == 201
    [key] = await services.keys.list_for(alice.id)
    assert key.allowed_networks == ("203.0.113.0/24", "2001:db8::/32")
    assert "203.0.113.0/24 2001:db8::/32" in await (await client.get("/account/api-keys")).text()
    bad = await create("not-a-network")
    assert bad.status == 422
    assert "not an IP address or network" in await bad.text()
    await services.users.set_networks(alice, ["198.51.100.0/24"], actor="cli")
    outside_owner = await create("203.0.113.0/24")
    assert outside_owner.status == 403
    assert "outside the networks" in await outside_owner.text()


async def test_the_key_list_changes_and_clears_networks(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """The key list's form sets a key's networks, clears them when left empty, and answers a
    bad entry with a readable page naming it; nothing changes then."""
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    services = client.app[SERVICES]
    alice = await make_page_user(services, "alice@example.com", grants=[REPORTS])
    await login(client)
    key = await mint(services, alice, REPORTS)
    action = f"/account/api-keys/{key.record.id}/networks"

    async def save(networks: str) -> Any:
        listing = await (await client.get("/account/api-keys")).text()
        data = form(listing, action).data(networks=networks)
        return await client.post(action, data=data, allow_redirects=False)

    assert (await save("192.0.2.0/24 2001:db8::/32")).status == 303
    stored = await services.store.get_key(key.record.id)
    assert stored is not None
    assert stored.allowed_networks == ("192.0.2.0/24", "2001:db8::/32")
    bad = await save("192.0.2.0/33")
    assert bad.status == 422
    assert "not an IP address or network" in await bad.text()
    assert (await save("")).status == 303
    stored = await services.store.get_key(key.record.id)
    assert stored is not None
    assert stored.allowed_networks is None

"""The consent flow for a BTCPay store owner whose grants are per store (real app, SQLite).

The owner holds `canviewinvoices` and `cancreateinvoice` on S1 and `canmodifystoresettings` on
S2; S1 is registered as "Main shop", S2 is not, S9 is registered but not his.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from gateway.app import create_app
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.e2e.support import Form, add_store, form, login, make_user

ROOT = Path(__file__).resolve().parents[2]
BTCPAY = ROOT / "policies" / "btcpay-greenfield.yaml"
CALLBACK = "https://app.example/callback"
VIEW = "btcpay.store.canviewinvoices"
CREATE = "btcpay.store.cancreateinvoice"
OWNER_GRANTS = [f"{VIEW}:S1", f"{CREATE}:S1", "btcpay.store.canmodifystoresettings:S2"]


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str) -> Any:
    client = await aiohttp_client(create_app(make_settings(sqlite_url, policy=(BTCPAY,))))
    services = client.app[SERVICES]
    await make_user(services, "alice@example.com", grants=OWNER_GRANTS)
    await add_store(services, "S1", "Main shop")
    await add_store(services, "S9", "Not hers")
    await login(client)
    return client


def url(*pairs: tuple[str, str]) -> str:
    return "/api-keys/authorize?" + urlencode(pairs)


async def consent(client: Any, *pairs: tuple[str, str]) -> tuple[str, Form]:
    response = await client.get(url(*pairs), allow_redirects=False)
    assert response.status == 200, await response.text()
    body = await response.text()
    return body, form(body, "/api-keys/authorize")


async def keys(client: Any) -> list[Any]:
    user = await client.app[SERVICES].users.find("alice@example.com")
    return list(await client.app[SERVICES].keys.list_for(user.id))


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


SPEC_EXAMPLE = (
    ("applicationName", "Your Application"),
    ("redirect", CALLBACK),
    ("permissions", CREATE),
    ("permissions", VIEW),
)


async def test_spec_example_works_for_a_per_store_owner(client: Any) -> None:
    """The spec's example asks unscoped; the page names his stores, and the key is handed on."""
    body, consent_form = await consent(client, *SPEC_EXAMPLE)
    shown = text(body)
    assert "on the stores you manage: Main shop, S2" in shown
    assert "you do not hold this" not in shown
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize")
    )
    assert response.status == 200
    handed = form(await response.text(), CALLBACK).fields
    assert [v for n, v in handed if n == "permissions[]"] == [CREATE, VIEW]
    [key] = await keys(client)
    assert key.permissions == (CREATE, VIEW)
    verified = await client.app[SERVICES].verifier.verify(dict(handed)["apiKey"])
    catalog = client.app[SERVICES].policy.catalog
    assert [str(p) for p in verified.effective(catalog)] == [
        f"{CREATE}:S1",
        f"{CREATE}:S2",
        f"{VIEW}:S1",
        f"{VIEW}:S2",
    ]


async def test_reach_names_only_the_stores_where_it_is_held(client: Any) -> None:
    """Store settings are his on S2 only, so that is the one store named; not S1."""
    body, _ = await consent(client, ("permissions", "btcpay.store.canmodifystoresettings"))
    assert "on the stores you manage: S2 " in text(body)
    assert 'id="blocked"' not in body


async def test_a_permission_he_holds_nowhere_blocks(client: Any) -> None:
    """A permission held on no store, nor unscoped, stays unavailable: strict blocks."""
    body, _ = await consent(client, ("permissions", "btcpay.server.canviewusers"))
    assert 'id="blocked"' in body


async def test_unknown_permissions_are_dropped_and_listed(client: Any) -> None:
    """Names this catalog does not know are left out, listed as not available here."""
    body, consent_form = await consent(
        client,
        ("permissions", VIEW),
        ("permissions", "btcpay.store.canfrobnicate"),
        ("permissions", "<b>btcpay.future</b>"),
    )
    assert "Not available here" in body
    assert "<code>btcpay.store.canfrobnicate</code>" in body
    assert "&lt;b&gt;btcpay.future&lt;/b&gt;" in body
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize")
    )
    assert response.status == 201
    [key] = await keys(client)
    assert key.permissions == (VIEW,)


async def test_the_label_can_be_edited(client: Any) -> None:
    """The label field starts as the application's name; what the user types is the label."""
    _, consent_form = await consent(client, *SPEC_EXAMPLE)
    assert consent_form.value("label") == "Your Application"
    await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize", label=" Till 2 ")
    )
    [key] = await keys(client)
    assert key.label == "Till 2"


@pytest.mark.parametrize("label", ["x" * 256, "bad\x01label"])
async def test_a_bad_label_creates_nothing(client: Any, label: str) -> None:
    """An over-long or control-character label is a 400 page; no key is made."""
    _, consent_form = await consent(client, *SPEC_EXAMPLE)
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize", label=label)
    )
    assert response.status == 400
    assert "label" in await response.text()
    assert await keys(client) == []


async def test_store_picker_lists_the_stores_he_holds(client: Any) -> None:
    """selectiveStores=true: S1 by name, S2 by id; a registered store not his is not listed."""
    body, consent_form = await consent(client, ("permissions", VIEW), ("selectiveStores", "true"))
    assert [v for n, v, _, _ in consent_form.boxes if n == "store"] == ["S1", "S2"]
    assert "Main shop" in body
    assert "Not hers" not in body
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize", store="S2")
    )
    assert response.status == 201
    [key] = await keys(client)
    assert key.permissions == (f"{VIEW}:S2",)


async def test_selective_reauthorization_offers_the_store_scoped_key(client: Any) -> None:
    """An app's key from an earlier store pick is offered for replacement, then replaced (the
    old one rotated)."""
    request = (
        ("redirect", CALLBACK),
        ("applicationIdentifier", "till"),
        ("permissions", VIEW),
        ("selectiveStores", "true"),
    )
    _, first = await consent(client, *request)
    await client.post("/api-keys/authorize", data=first.data(decision="authorize", store="S1"))
    [old] = await keys(client)
    assert old.permissions == (f"{VIEW}:S1",)
    body, second = await consent(client, *request)
    assert 'id="existing-key"' in body
    assert second.value("replace") == old.id
    await client.post(
        "/api-keys/authorize", data=second.data(decision="replace", store=["S1", "S2"])
    )
    # The old key is rotated (it works for reauthorize_grace), not revoked at once.
    [new] = [k for k in await keys(client) if k.id != old.id]
    assert new.permissions == (f"{VIEW}:S1", f"{VIEW}:S2")
    [rotated] = [k for k in await keys(client) if k.id == old.id]
    assert rotated.replaced_by == new.id


async def test_empty_redirect_is_treated_as_absent(client: Any) -> None:
    """`redirect=` empty: the key is shown on this site, as BTCPay does without a redirect."""
    _, consent_form = await consent(client, ("redirect", ""), ("permissions", VIEW))
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize")
    )
    assert response.status == 201
    assert len(await keys(client)) == 1


async def test_trailing_dot_redirect_is_shown_and_used_without_the_dot(client: Any) -> None:
    """`https://app.example./cb` is accepted; the page and the hand-off use app.example."""
    body, consent_form = await consent(
        client, ("redirect", "https://app.example./callback"), ("permissions", VIEW)
    )
    shown = text(body)
    assert "app.example." not in shown
    assert "sent to https://app.example " in shown
    assert "Full address: https://app.example/callback" in shown
    response = await client.post(
        "/api-keys/authorize", data=consent_form.data(decision="authorize")
    )
    assert "form-action https://app.example;" in response.headers["Content-Security-Policy"]
    form(await response.text(), CALLBACK)


@pytest.mark.parametrize(
    "redirect", ["https://0x7f000001/cb", "http://0177.0.0.1/cb", "https://2130706433/cb"]
)
async def test_numeric_redirect_hosts_get_an_error_page(client: Any, redirect: str) -> None:
    """Hex, octal and dword hosts are refused with a 400 page naming the rule."""
    response = await client.get(url(("redirect", redirect)), allow_redirects=False)
    assert response.status == 400
    assert "dotted-quad" in await response.text()


async def test_account_page_makes_an_all_stores_key(client: Any) -> None:
    """The create form: "All stores" for a per-store owner gives the unscoped key."""
    page = await client.get("/account/api-keys/new")
    create = form(await page.text(), "/account/api-keys")
    response = await client.post(
        "/account/api-keys",
        data=create.data(label="pos", permission=[VIEW, CREATE], **{"scope-store": "all"}),
    )
    assert response.status == 201, await response.text()
    [key] = await keys(client)
    assert key.permissions == (VIEW, CREATE)


async def test_account_page_offers_her_unregistered_store(client: Any) -> None:
    """ "Only these stores" lists S1 (named) and S2 (by id), not S9; S2 can be chosen."""
    page = await client.get("/account/api-keys/new")
    create = form(await page.text(), "/account/api-keys")
    assert [v for n, v, _, _ in create.boxes if n == "resource"] == ["store:S1", "store:S2"]
    response = await client.post(
        "/account/api-keys",
        data=create.data(
            label="pos", permission=VIEW, resource="store:S2", **{"scope-store": "selected"}
        ),
    )
    assert response.status == 201, await response.text()
    [key] = await keys(client)
    assert key.permissions == (f"{VIEW}:S2",)

"""The spec's authorize examples in Chromium, for a BTCPay store owner with per-store grants.

She holds `canviewinvoices` and `cancreateinvoice` on S1 ("Main shop", registered) and
`canmodifystoresettings` on S2 (not registered): BTCPay's "all my stores" is those two.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e.conftest import Live
from tests.e2e.support import PASSWORD, add_store, make_user, shot

BTCPAY = Path(__file__).resolve().parents[2] / "policies" / "btcpay-greenfield.yaml"
VIEW = "btcpay.store.canviewinvoices"
CREATE = "btcpay.store.cancreateinvoice"
SPEC = (("permissions", CREATE), ("permissions", VIEW))


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with Live(f"sqlite:///{tmp_path / 'keygate.db'}", policy=(BTCPAY,)) as running:
        assert running.services is not None
        grants = [f"{VIEW}:S1", f"{CREATE}:S1", "btcpay.store.canmodifystoresettings:S2"]
        running.run(make_user(running.services, "owner@example.com", grants=grants))
        running.run(add_store(running.services, "S1", "Main shop"))
        yield running


def open_logged_in(live: Live, page: Any, *pairs: tuple[str, str]) -> None:
    page.goto(f"{live.base}/api-keys/authorize?{urlencode(pairs)}")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name=re.compile("wants an API key")).wait_for()


def keys(live: Live) -> list[Any]:
    assert live.services is not None
    owner = live.run(live.services.users.find("owner@example.com"))
    return list(live.run(live.services.keys.list_for(owner.id)))


def test_all_stores_example_names_her_stores_and_makes_the_key(live: Live, page: Any) -> None:
    """`permissions=cancreateinvoice&permissions=canviewinvoices`: both offered on her stores;
    she renames the key and gets it, unscoped, shown on the page."""
    open_logged_in(live, page, ("applicationName", "Your Application"), *SPEC)
    assert page.get_by_text("on the stores you manage: Main shop, S2").count() == 2
    assert page.get_by_text("you do not hold this").count() == 0
    page.get_by_label("Key label").fill("Till in Main shop")
    shot(page, "held-01-all-stores")
    page.get_by_role("button", name="Authorize").click()
    page.get_by_label(re.compile("API key")).wait_for()
    [key] = keys(live)
    assert key.permissions == (CREATE, VIEW)
    assert key.label == "Till in Main shop"


def test_selective_stores_example_offers_her_stores(live: Live, page: Any) -> None:
    """`…&selectiveStores=true`: the picker lists Main shop and S2; she picks S2."""
    callback = f"{live.callback_base}/pick"
    open_logged_in(live, page, ("redirect", callback), *SPEC, ("selectiveStores", "true"))
    stores = page.get_by_role("group", name="Which stores?")
    assert stores.get_by_role("checkbox").count() == 2
    stores.get_by_role("checkbox", name=re.compile("^S2")).check()
    shot(page, "held-02-selective")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(callback)
    [(_, fields)] = live.callback.posts
    assert [v for n, v in fields if n == "permissions[]"] == [f"{CREATE}:S2", f"{VIEW}:S2"]


def test_non_strict_example_lets_her_remove_one(live: Live, page: Any) -> None:
    """`…&strict=false`: she unticks create; the key can only view, on her stores."""
    callback = f"{live.callback_base}/loose"
    open_logged_in(live, page, ("redirect", callback), *SPEC, ("strict", "false"))
    page.get_by_role("checkbox", name=re.compile("^Create an invoice")).uncheck()
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(callback)
    [(_, fields)] = live.callback.posts
    assert [v for n, v in fields if n == "permissions[]"] == [VIEW]


def test_unknown_permissions_are_listed_not_an_error(live: Live, page: Any) -> None:
    """A newer app's permission is listed as not available here; the rest still works."""
    open_logged_in(live, page, *SPEC, ("permissions", "btcpay.store.canfrobnicate"))
    page.get_by_text("Not available here").wait_for()
    assert page.get_by_text("btcpay.store.canfrobnicate").count() == 1
    shot(page, "held-03-dropped")
    page.get_by_role("button", name="Authorize").click()
    page.get_by_label(re.compile("API key")).wait_for()
    [key] = keys(live)
    assert key.permissions == (CREATE, VIEW)

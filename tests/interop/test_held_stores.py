"""A BTCPay store owner with per-store grants, with the real clients against a live gateway.

The owner holds `canviewinvoices` and `cancreateinvoice` on S1 and `canmodifystoresettings`
(which implies both) on S2. Over the Greenfield API (pygreenfield, Basic email:password) he
creates a key with the unscoped permissions, BTCPay's "all my stores"; btcpay-python-sdk then
uses it on each store through the proxy, and is refused on a store he does not manage.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import btcpay
import pygreenfield
import pytest
import requests
from pygreenfield.api.api_keys_api import APIKeysApi
from pygreenfield.models.v1_apikeys_body import V1ApikeysBody
from pygreenfield.rest import ApiException

from tests.interop.live import LiveGateway, live_gateway

ROOT = Path(__file__).resolve().parents[2]
BTCPAY = ROOT / "policies" / "btcpay-greenfield.yaml"
PASSWORD = "correct horse battery"
VIEW = "btcpay.store.canviewinvoices"
CREATE = "btcpay.store.cancreateinvoice"
ROUTES = """
upstreams:
  btcpay:
    url: {url}
routes:
  - path: /api/v1/stores/{{storeId}}/invoices/**
    methods: [GET]
    upstream: btcpay
    permission: btcpay.store.canviewinvoices:{{storeId}}
  - path: /api/v1/stores/{{storeId}}/invoices/**
    methods: [POST]
    upstream: btcpay
    permission: btcpay.store.cancreateinvoice:{{storeId}}
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    with live_gateway(
        tmp_path_factory.mktemp("held"), policy_text=ROUTES, catalogs=(BTCPAY,)
    ) as gateway:
        yield gateway


def basic_api(live: LiveGateway, email: str) -> APIKeysApi:
    """pygreenfield's client sending `Authorization: Basic base64(email:password)`."""
    config = pygreenfield.Configuration()
    config.host = live.url
    config.api_key, config.api_key_prefix = {}, {}
    config.api_key["Authorization"] = base64.b64encode(f"{email}:{PASSWORD}".encode()).decode()
    config.api_key_prefix["Authorization"] = "Basic"
    return APIKeysApi(pygreenfield.ApiClient(config))


def sdk_for(live: LiveGateway, key: str, store: str) -> type[btcpay.Invoices]:
    btcpay.api_key, btcpay.host_url, btcpay.store_id = key, live.url + "/", store
    return btcpay.Invoices


def test_owner_creates_an_all_stores_key_and_uses_it_on_each_store(live: LiveGateway) -> None:
    """Unscoped store permissions reach S1 and S2 (where he holds them), never S3."""
    live.user(
        "owner@example.com",
        password=PASSWORD,
        grants=[f"{VIEW}:S1", f"{CREATE}:S1", "btcpay.store.canmodifystoresettings:S2"],
    )
    created = basic_api(live, "owner@example.com").api_v1_api_keys_post(
        body=V1ApikeysBody(label="all my stores", permissions=[VIEW, CREATE])
    )
    assert created.permissions == [VIEW, CREATE]
    for store in ("S1", "S2"):
        invoices = sdk_for(live, created.api_key, store)
        seen = invoices.get_invoices()
        assert seen["path"] == f"/api/v1/stores/{store}/invoices/"
        # The upstream is told the stores, never an unscoped permission the owner lacks.
        told = seen["identity"]["X-Gateway-Permissions"].split(" ")
        assert told == [f"{VIEW}:S1", f"{VIEW}:S2", f"{CREATE}:S1", f"{CREATE}:S2"]
        made = invoices.create_invoice(amount="1", currency="USD")
        assert made["method"] == "POST"
    with pytest.raises(requests.HTTPError) as refused:
        sdk_for(live, created.api_key, "S3").get_invoices()
    assert refused.value.response.status_code == 403


def test_owner_holding_a_store_permission_nowhere_is_refused(live: LiveGateway) -> None:
    """Without the permission on any store, the unscoped key is refused (403, as before)."""
    live.user("clerk@example.com", password=PASSWORD, grants=[f"{VIEW}:S1"])
    with pytest.raises(ApiException) as failure:
        basic_api(live, "clerk@example.com").api_v1_api_keys_post(
            body=V1ApikeysBody(label="too much", permissions=[CREATE])
        )
    assert failure.value.status == 403
    assert json.loads(failure.value.body)["missingPermission"] == CREATE


def test_unknown_permission_over_the_api_is_still_422(live: LiveGateway) -> None:
    """The API keeps answering 422 for a name the catalog does not know."""
    live.user("third@example.com", password=PASSWORD, grants=[f"{VIEW}:S1"])
    with pytest.raises(ApiException) as failure:
        basic_api(live, "third@example.com").api_v1_api_keys_post(
            body=V1ApikeysBody(label="future", permissions=["btcpay.store.canfrobnicate"])
        )
    assert failure.value.status == 422
    assert json.loads(failure.value.body)[0]["path"] == "permissions[0]"

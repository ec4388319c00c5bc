"""Real clients against a real `gateway serve` process: pygreenfield, btcpay-python-sdk, curl
and requests (Basic haplo:<key> through the proxy)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import btcpay
import pygreenfield
import pytest
import requests
from pygreenfield.api.api_keys_api import APIKeysApi
from pygreenfield.models.v1_apikeys_body import V1ApikeysBody
from pygreenfield.rest import ApiException
from requests.auth import HTTPBasicAuth

from gateway.keys import format as keyformat
from tests.interop.live import LiveGateway, live_gateway

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    with live_gateway(tmp_path_factory.mktemp("interop")) as gateway:
        yield gateway


def greenfield_api(live: LiveGateway, key: str) -> APIKeysApi:
    config = pygreenfield.Configuration()
    config.host = live.url
    # Configuration() is a shallow copy of a process-wide default, so its dicts are shared
    # between instances: give each client its own before setting the key.
    config.api_key, config.api_key_prefix = {}, {}
    config.api_key["Authorization"] = key
    config.api_key_prefix["Authorization"] = "token"
    return APIKeysApi(pygreenfield.ApiClient(config))


def test_pygreenfield_creates_reads_and_revokes_keys(live: LiveGateway) -> None:
    """pygreenfield's generated client creates a key, reads `current` and revokes it."""
    admin = live.user("gf-admin@example.com", admin=True)
    root = live.key(admin, ["unrestricted"])
    api = greenfield_api(live, root)
    created = api.api_v1_api_keys_post(
        body=V1ApikeysBody(label="from pygreenfield", permissions=["reports.read"])
    )
    assert created.label == "from pygreenfield"
    assert created.permissions == ["reports.read"]
    new_api = greenfield_api(live, created.api_key)
    current = new_api.api_v1_api_keys_current_get()
    assert current.api_key == created.api_key
    revoked = new_api.api_v1_api_keys_current_delete()
    assert revoked.api_key == created.api_key
    with pytest.raises(ApiException) as failure:
        new_api.api_v1_api_keys_current_get()
    assert failure.value.status == 401
    assert json.loads(failure.value.body)["code"] == "unauthenticated"
    other = api.api_v1_api_keys_post(body=V1ApikeysBody(label="to delete", permissions=[]))
    api.api_v1_api_keys_apikey_delete(keyformat.parse(other.api_key).key_id)
    with pytest.raises(ApiException) as missing:
        api.api_v1_api_keys_apikey_delete(keyformat.parse(other.api_key).key_id)
    assert missing.value.status == 404


def test_btcpay_python_sdk_request_helpers(live: LiveGateway) -> None:
    """btcpay-python-sdk's `token` session reaches the Greenfield endpoints through its own
    _get/_post/_delete helpers, and its errors carry our JSON."""
    admin = live.user("sdk-admin@example.com", admin=True)
    btcpay.api_key = live.key(admin, ["unrestricted"])
    btcpay.host_url = live.url + "/"
    btcpay.store_id = "S1"
    client = btcpay.BTCPayClient()
    me = client._get_request("/api-keys/current")
    assert me["apiKey"] == btcpay.api_key
    made = client._post_request("/api-keys", {"label": "sdk", "permissions": ["store.view:S1"]})
    assert made["permissions"] == ["store.view:S1"]
    deleted = client._delete_request(f"/api-keys/{keyformat.parse(made['apiKey']).key_id}")
    assert deleted is None  # an empty 200, as BTCPay answers
    with pytest.raises(requests.HTTPError) as failure:
        client._post_request("/api-keys", {"permissions": ["x:"]})
    assert failure.value.response.status_code == 422
    assert failure.value.response.json()[0]["path"] == "permissions[0]"


def _curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def test_curl_examples_from_the_docs(live: LiveGateway) -> None:
    """The curl commands of docs/api.md work as written: Basic email:password creation,
    token/Bearer/X-API-KEY reads, /v1/apikeys with a Bearer key, haplo Basic on a route."""
    live.user("ops@example.com", grants=["reports.read"], password=PASSWORD)
    status, body = _curl(
        "-u",
        f"ops@example.com:{PASSWORD}",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"label": "curl", "permissions": ["reports.read"]}',
        f"{live.url}/api/v1/api-keys",
    )
    assert status == 200, body
    key = json.loads(body)["apiKey"]
    for header in (
        f"Authorization: token {key}",
        f"Authorization: Bearer {key}",
        f"X-API-KEY: {key}",
    ):
        status, body = _curl("-H", header, f"{live.url}/api/v1/api-keys/current")
        assert status == 200, body
    status, body = _curl("-u", f"haplo:{key}", f"{live.url}/api/reports/daily")
    assert status == 200, body
    assert json.loads(body)["path"] == "/api/reports/daily"
    status, body = _curl("-H", f"Authorization: token {key}", "-X", "PUT", f"{live.url}/v1/apikeys")
    assert status == 405
    status, body = _curl(f"{live.url}/openapi.json")
    assert status == 200
    assert json.loads(body)["openapi"].startswith("3.1")


def test_requests_haplo_basic_auth_through_the_proxy(live: LiveGateway) -> None:
    """requests' HTTPBasicAuth('haplo', key) passes a proxied route; a wrong key is 401 and a
    key limited to another path is 403."""
    owner = live.user("svc@example.com", grants=["reports.read"])
    key = live.key(owner, ["reports.read"])
    ok = requests.get(
        f"{live.url}/api/reports/weekly", auth=HTTPBasicAuth("haplo", key), timeout=10
    )
    assert ok.status_code == 200
    assert ok.json()["path"] == "/api/reports/weekly"
    assert "authorization" not in {k.lower() for k in ok.json().get("identity", {})}
    bad = requests.get(
        f"{live.url}/api/reports/weekly", auth=HTTPBasicAuth("haplo", key[:-1] + "x"), timeout=10
    )
    assert bad.status_code == 401
    limited = live.key(owner, ["reports.read"], path="=/api/reports/daily")
    elsewhere = requests.get(
        f"{live.url}/api/reports/weekly", auth=HTTPBasicAuth("haplo", limited), timeout=10
    )
    assert elsewhere.status_code == 403
    header = "Basic " + base64.b64encode(f"haplo:{limited}".encode()).decode()
    exact = requests.get(
        f"{live.url}/api/reports/daily", headers={"Authorization": header}, timeout=10
    )
    assert exact.status_code == 200


def test_a_live_gateway_serves_the_docs(live: LiveGateway, tmp_path: Path) -> None:
    """The live process serves /docs as HTML."""
    page = requests.get(f"{live.url}/docs", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")

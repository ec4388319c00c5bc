"""Credentials on the data plane, end to end through a served app (PostgreSQL, Redis, a real
upstream): carriers, one credential only, refusals that say why, hostile headers, passwords."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.services import Services
from gateway.settings import Settings
from gateway.state import SERVICES
from gateway.store.base import Audit
from tests.conftest import make_settings
from tests.integration.test_auth_support import (
    PASSWORD,
    bad_checksum,
    new_key,
    new_user,
    policy_for,
    raw_request,
    same_id_other_secret,
    unknown_key,
)
from tests.integration.upstream import EchoUpstream

REPORT = "/api/reports/daily"
PROBLEM = "application/problem+json"


@pytest.fixture
async def upstream() -> AsyncIterator[EchoUpstream]:
    async with EchoUpstream() as upstream:
        yield upstream


@pytest.fixture
def settings(pg_url: str, redis_url: str, upstream: EchoUpstream, tmp_path: Path) -> Settings:
    return make_settings(
        pg_url,
        redis_url=redis_url,
        redis_namespace=f"kgtest{uuid.uuid4().hex[:10]}",
        policy=(policy_for(tmp_path, upstream.url),),
        login_max_failures=2,
    )


@pytest.fixture
async def client(settings: Settings, aiohttp_client: Any) -> Any:
    # `settings` first: its database must outlive the app, so it is set up before the client.
    return await aiohttp_client(create_app(settings))


def services_of(client: Any) -> Services:
    return client.app[SERVICES]  # type: ignore[no-any-return]


async def a_key(client: Any, **kw: Any) -> str:
    services = services_of(client)
    owner = await new_user(
        services, f"{uuid.uuid4().hex[:8]}@example.com", ["demo.reports.read", "demo.legacy.access"]
    )
    return (await new_key(services, owner, ["demo.reports.read"], **kw)).text


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def problem_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == PROBLEM
    body: dict[str, Any] = await response.json(content_type=PROBLEM)
    assert body["status"] == status
    return body


@pytest.mark.parametrize("carrier", ["x-api-key", "token", "Bearer", "bearer", "basic-haplo"])
async def test_every_carrier_authenticates_and_the_key_stays_behind(
    client: Any, upstream: EchoUpstream, carrier: str
) -> None:
    """Each accepted carrier lets the key in; the upstream never receives the key."""
    key = await a_key(client)
    headers = {
        "x-api-key": {"X-API-KEY": key},
        "token": {"Authorization": f"token {key}"},
        "Bearer": {"Authorization": f"Bearer {key}"},
        "bearer": {"Authorization": f"bEARER {key}"},
        "basic-haplo": {"Authorization": basic("haplo", key)},
    }[carrier]
    response = await client.get(REPORT, headers=headers)
    assert response.status == 200
    seen = upstream.received[-1]
    assert seen.target == REPORT
    assert all(key not in value for _, value in seen.headers)
    assert seen.header("Authorization") == []
    assert seen.header("X-API-KEY") == []


async def test_a_missing_credential_is_401_with_a_challenge(client: Any) -> None:
    """No credential on a protected route: 401, WWW-Authenticate, problem+json."""
    response = await client.get(REPORT)
    body = await problem_of(response, 401)
    assert body["code"] == "credential-missing"
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert "Basic" in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "headers",
    [
        "x-api-key twice",
        "authorization twice",
        "both carriers",
    ],
)
async def test_more_than_one_credential_is_400(client: Any, headers: str) -> None:
    """The same header twice, or two carriers, is refused before any key is looked at."""
    key = await a_key(client)
    pairs = {
        "x-api-key twice": [("X-API-KEY", key), ("X-API-KEY", key)],
        "authorization twice": [("Authorization", f"Bearer {key}")] * 2,
        "both carriers": [("X-API-KEY", key), ("Authorization", f"Bearer {key}")],
    }[headers]
    body = await problem_of(await client.get(REPORT, headers=pairs), 400)
    assert body["code"] == "duplicate-credential"
    assert services_of(client).verifier.lookups == 0


async def test_a_wrong_secret_looks_exactly_like_an_unknown_key(client: Any) -> None:
    """Knowing a key id buys nothing: its id with a wrong secret answers like a random key."""
    key = await a_key(client)
    answers = []
    for text in (unknown_key(), same_id_other_secret(key)):
        response = await client.get(REPORT, headers={"X-API-KEY": text})
        # Every answer has its own date and request id; nothing else may differ.
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in {"date", "x-request-id"}
        }
        answers.append((response.status, headers, await response.read()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401
    assert b'"code": "key-unknown"' in answers[0][2]


async def test_refusals_say_why(client: Any) -> None:
    """Malformed, unknown, disabled, expired key and disabled owner each have their code."""
    services = services_of(client)
    disabled, expired, orphaned = await a_key(client), await a_key(client), await a_key(client)
    await services.keys.set_status(
        await services.keys.get_owned(disabled[:20], None), "disabled", actor=None
    )
    record = await services.keys.get_owned(expired[:20], None)
    await services.store.update_key(
        record.id,
        {"expires_at": datetime.now(UTC) - timedelta(seconds=1)},
        Audit("test", "key.expire", f"key:{record.id}"),
    )
    await services.verifier.invalidate([record.key_hash])
    owner = await services.users.find((await services.keys.get_owned(orphaned[:20], None)).user_id)
    await services.users.set_disabled(owner, True, actor="test")
    cases = {
        bad_checksum(disabled): "key-malformed",
        "apk_short": "key-malformed",
        unknown_key(): "key-unknown",
        disabled: "key-disabled",
        expired: "key-expired",
        orphaned: "owner-disabled",
    }
    for text, code in cases.items():
        response = await client.get(REPORT, headers={"X-API-KEY": text})
        body = await problem_of(response, 401)
        assert body["code"] == code
        assert "WWW-Authenticate" in response.headers
        assert text not in await response.text()


def _request(extra_header: bytes, path: bytes = REPORT.encode()) -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: gateway\r\n" + extra_header + b"\r\n"
        b"Connection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("header", "statuses"),
    [
        (b"X-API-KEY: apk_\xc3\xa9t\xc3\xa9", {401}),
        (b"X-API-KEY: apk_\xff\xfe", {401}),
        (b"Authorization: Bearer \xff\xfe\xfd", {401}),
        (b"Authorization: Basic !!not-base64!!", {401}),
        (b"Authorization: Basic " + base64.b64encode(b"\xff:\xfe"), {401}),
        (b"Authorization: Basic " + base64.b64encode(b"haplo:\xc3\xa9"), {401}),
        (b"X-API-KEY: " + b"A" * 10_000, {401}),
        (b"Authorization: Bearer " + b"A" * 10_000, {401}),
        # Beyond aiohttp's own header-size limit (app.py sets 16 kB) aiohttp answers itself:
        # 400 text/plain today, 431 in some versions; never a 500.
        (b"X-API-KEY: " + b"A" * 100_000, {400, 431}),
    ],
    ids=[
        "x-api-key-utf8",
        "x-api-key-invalid-utf8",
        "bearer-invalid-utf8",
        "basic-bad-base64",
        "basic-invalid-utf8",
        "basic-haplo-non-ascii",
        "x-api-key-10kB",
        "bearer-10kB",
        "x-api-key-100kB",
    ],
)
async def test_hostile_credential_headers_are_refused_never_500(
    client: Any, header: bytes, statuses: set[int]
) -> None:
    """Non-ASCII, bad base64 and huge headers get 401 (or aiohttp's 400), never a 500."""
    status, headers, _ = await raw_request(client.server.port, _request(header))
    assert status in statuses
    if status == 401:
        assert headers["content-type"] == PROBLEM
        assert "www-authenticate" in headers


async def test_passwords_work_only_where_a_route_allows_them(client: Any) -> None:
    """Basic email:password opens `passwords: true` routes only; elsewhere it is refused
    before the password is even checked."""
    services = services_of(client)
    user = await new_user(
        services, "legacy@example.com", ["demo.legacy.access", "demo.reports.read"]
    )
    good = basic(user.email, PASSWORD)
    assert (await client.get("/legacy/x", headers={"Authorization": good})).status == 200
    body = await problem_of(await client.get(REPORT, headers={"Authorization": good}), 401)
    assert body["code"] == "password-not-allowed"
    wrong = basic(user.email, "not the password")
    body = await problem_of(await client.get("/legacy/x", headers={"Authorization": wrong}), 401)
    assert body["code"] == "bad-credentials"
    key = await a_key(client)
    assert (await client.get("/legacy/x", headers={"X-API-KEY": key})).status == 403


async def test_failed_passwords_are_throttled_per_account(client: Any) -> None:
    """After the allowed failures an account answers 429 with Retry-After, even to the right
    password, until the window passes."""
    user = await new_user(services_of(client), "victim@example.com", ["demo.legacy.access"])
    wrong = {"Authorization": basic(user.email, "wrong password 1")}
    for _ in range(2):
        await problem_of(await client.get("/legacy/x", headers=wrong), 401)
    right = {"Authorization": basic(user.email.upper(), PASSWORD)}
    response = await client.get("/legacy/x", headers=right)
    body = await problem_of(response, 429)
    assert body["code"] == "too-many-requests"
    assert int(response.headers["Retry-After"]) > 0


async def test_failed_passwords_are_throttled_per_address(client: Any) -> None:
    """One address failing against many accounts is throttled too."""
    for i in range(8):  # login_max_failures 2 per account, 4x that per address
        wrong = {"Authorization": basic(f"nobody{i}@example.com", "wrong password")}
        await problem_of(await client.get("/legacy/x", headers=wrong), 401)
    fresh = {"Authorization": basic("someone-else@example.com", "wrong password")}
    response = await client.get("/legacy/x", headers=fresh)
    await problem_of(response, 429)
    assert "Retry-After" in response.headers

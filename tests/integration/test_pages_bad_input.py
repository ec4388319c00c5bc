"""Bad input on the pages and the code exchange: a readable 4xx (HTML on the pages, OAuth JSON
at the token endpoint), never a 500 or a "database unavailable"."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from gateway.app import create_app
from gateway.state import SERVICES
from tests.conftest import make_settings
from tests.e2e.support import PASSWORD, form, login, make_user

CALLBACK = "https://app.example/callback"
TOKEN = "/api-keys/token"
LIMIT = 256 * 1024  # room for 100,000 nested brackets


@pytest.fixture
async def client(aiohttp_client: Any, store_url: str) -> Any:
    """The pages on SQLite and on PostgreSQL, with alice logged in."""
    client = await aiohttp_client(create_app(make_settings(store_url, max_body_bytes=LIMIT)))
    await make_user(client.app[SERVICES], "alice@example.com", grants=["demo.reports.read"])
    await login(client)
    return client


async def _keys(client: Any) -> list[Any]:
    alice = await client.app[SERVICES].users.find("alice@example.com")
    return list(await client.app[SERVICES].keys.list_for(alice.id))


def _unicode_escape_form(fields: list[tuple[str, str]], raw: str) -> tuple[bytes, str]:
    """A urlencoded body that declares `charset=unicode_escape`, so `raw` (e.g. `x=\\ud800`)
    decodes to a lone surrogate, as aiohttp honours whatever charset a request names."""
    body = (urlencode(fields) + "&" + raw).encode("ascii")
    return body, "application/x-www-form-urlencoded; charset=unicode_escape"


async def _assert_check_the_form(response: Any, field: str) -> None:
    assert response.status == 422, await response.text()
    assert response.headers["Content-Type"].startswith("text/html")
    page = await response.text()
    assert "Please check the form" in page
    assert f"<code>{field}</code>" in page


async def test_login_with_a_lone_surrogate_is_a_422_page(
    aiohttp_client: Any, store_url: str
) -> None:
    """A login form whose email decodes to a lone surrogate is a 422 page naming `email`."""
    client = await aiohttp_client(create_app(make_settings(store_url)))
    await make_user(client.app[SERVICES], "alice@example.com")
    csrf = form(await (await client.get("/login")).text(), "/login").value("csrf")
    body, content_type = _unicode_escape_form(
        [("csrf", csrf), ("password", PASSWORD)], "email=alice\\ud800@example.com"
    )
    response = await client.post(
        "/login", data=body, headers={"Content-Type": content_type}, allow_redirects=False
    )
    await _assert_check_the_form(response, "email")
    keys_page = await client.get("/account/api-keys", allow_redirects=False)
    assert keys_page.status == 303  # nobody was logged in


async def test_key_creation_with_a_lone_surrogate_is_a_422_page(client: Any) -> None:
    """A key label that decodes to a lone surrogate (multipart part charset) creates no key."""
    page = await client.get("/account/api-keys/new")
    fields = form(await page.text(), "/account/api-keys").data(permission="demo.reports.read")
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields:
        part = writer.append(value, {"Content-Type": "text/plain; charset=utf-8"})
        part.set_content_disposition("form-data", name=name)
    label = writer.append("Nightly \\udfff", {"Content-Type": "text/plain; charset=unicode_escape"})
    label.set_content_disposition("form-data", name="label")
    response = await client.post("/account/api-keys", data=writer, allow_redirects=False)
    await _assert_check_the_form(response, "label")
    assert await _keys(client) == []


async def test_consent_with_a_lone_surrogate_is_a_422_page(client: Any) -> None:
    """A consent form with a field that decodes to a lone surrogate (utf-7) creates no key."""
    query = urlencode(
        [
            ("applicationName", "Gozo"),
            ("redirect", CALLBACK),
            ("permissions", "demo.reports.read"),
        ]
    )
    page = await client.get("/api-keys/authorize?" + query)
    assert page.status == 200
    fields = form(await page.text(), "/api-keys/authorize").data(decision="authorize")
    # UTF-7 writes U+D800 as `+2AA-`; the rest of the body is plain ASCII.
    body = urlencode(fields) + "&permission=+2AA-"
    response = await client.post(
        "/api-keys/authorize",
        data=body.encode("ascii"),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-7"},
        allow_redirects=False,
    )
    await _assert_check_the_form(response, "permission")
    assert await _keys(client) == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded; charset=no-such-charset",
        "application/x-www-form-urlencoded; charset=utf-16",
    ],
)
async def test_an_unreadable_form_is_a_400_page(client: Any, content_type: str) -> None:
    """A form in a charset Python does not know, or that does not decode, is a 400 page."""
    response = await client.post(
        "/account/api-keys", data=b"label=%41", headers={"Content-Type": content_type}
    )
    assert response.status == 400, await response.text()
    assert "the form could not be read" in await response.text()


TOKEN_BODIES = [
    pytest.param(b"[" * 100_000, "application/json", "body", id="deep-json"),
    pytest.param(b"[" * 1500 + b"]" * 1500, "application/json", "body", id="deep-closed"),
    pytest.param(b'{"code": "\\ud800"}', "application/json", "code", id="json-surrogate"),
    pytest.param(b'{"c\\udc00de": "x"}', "application/json", "c\\udc00de", id="json-name"),
    pytest.param(b"\xff\xfe{}", "application/json", "body", id="not-utf8"),
    pytest.param(
        b"code=+2AA-", "application/x-www-form-urlencoded; charset=utf-7", "code", id="form-utf7"
    ),
    pytest.param(
        b"code=x", "application/x-www-form-urlencoded; charset=nope", "form", id="form-charset"
    ),
]


@pytest.mark.parametrize(("body", "content_type", "named"), TOKEN_BODIES)
async def test_token_endpoint_refuses_bad_bodies_as_invalid_request(
    client: Any, body: bytes, content_type: str, named: str
) -> None:
    """The code exchange reads bodies like every other endpoint: 400 invalid_request, no 500."""
    response = await client.post(TOKEN, data=body, headers={"Content-Type": content_type})
    assert response.status == 400, await response.text()
    assert response.headers["Cache-Control"].startswith("no-store")
    answer = await response.json()
    assert answer["error"] == "invalid_request"
    assert named in answer["error_description"]


async def test_token_endpoint_body_limit(client: Any) -> None:
    """A JSON body over max_body_bytes is a 413 in the endpoint's OAuth shape."""
    body = b'{"code": "' + b"x" * LIMIT + b'"}'
    response = await client.post(TOKEN, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert (await response.json())["error"] == "invalid_request"

"""Bad input on the API surfaces: always a clear error in the surface's JSON shape, never a
500, never HTML."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.keys.manage import NewKey
from tests.conftest import make_settings
from tests.openapi_check import Gateway, start_gateway


@pytest.fixture
async def gw(aiohttp_client: Any, sqlite_url: str) -> Gateway:
    return await start_gateway(aiohttp_client, make_settings(sqlite_url, max_body_bytes=4096))


@pytest.fixture
async def admin_key(gw: Gateway) -> NewKey:
    admin = await gw.user("root@example.com", admin=True)
    return await gw.key(admin, ["unrestricted"])


BAD_GREENFIELD_BODIES = [
    pytest.param(b"label=x", "body", id="not-json"),
    pytest.param(b"\xff\xfe{}", "body", id="not-utf8"),
    pytest.param(b"[]", "body", id="array"),
    pytest.param(b'"text"', "body", id="string"),
    pytest.param(b"null", "body", id="null"),
    pytest.param(b'{"label": NaN}', "body", id="nan"),
    pytest.param(b"[" * 1500 + b"]" * 1500, "body", id="deep-nesting"),
    pytest.param(b'{"label": "x", "extra": 1}', "extra", id="unknown-field"),
    pytest.param(b'{"label": 5}', "label", id="label-number"),
    pytest.param(b'{"label": "a\\u0000b"}', "label", id="label-nul"),
    pytest.param(b'{"label": "line\\nbreak"}', "label", id="label-newline"),
    pytest.param(b'{"permissions": "demo.reports.read"}', "permissions", id="permissions-string"),
    pytest.param(b'{"permissions": ["x:"]}', "permissions[0]", id="permission-x-colon"),
    pytest.param(b'{"permissions": [5]}', "permissions[0]", id="permission-number"),
    pytest.param(b'{"permissions": [null]}', "permissions[0]", id="permission-null"),
    pytest.param(b'{"permissions": [""]}', "permissions[0]", id="permission-empty"),
    pytest.param(b'{"permissions": ["nope.nope"]}', "permissions[0]", id="permission-unknown"),
    pytest.param(
        b'{"permissions": ["demo.reports.read:S1"]}', "permissions[0]", id="unscopable-scoped"
    ),
    pytest.param(
        b'{"permissions": ["demo.store.canviewinvoices:S 1"]}', "permissions[0]", id="bad-resource"
    ),
]


@pytest.mark.parametrize(("raw", "path"), BAD_GREENFIELD_BODIES)
async def test_greenfield_rejects_bad_bodies_with_422_list(
    gw: Gateway, admin_key: NewKey, raw: bytes, path: str
) -> None:
    """Each malformed Greenfield body is a 422 `[{path, message}]` naming the member at fault."""
    reply = await gw.api.post(
        "/api/v1/api-keys",
        key=admin_key.text,
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 422, reply.text
    errors = reply.json()
    assert isinstance(errors, list)
    assert path in [e["path"] for e in errors]
    assert await gw.services.keys.list_for(admin_key.record.user_id) == [admin_key.record]


async def test_large_label_and_permission_lists_within_the_body_limit(
    aiohttp_client: Any, sqlite_url: str
) -> None:
    """With a body limit that admits them, a 10 kB label and 10,000 permissions are each one
    422 entry (never 10,000 of them)."""
    gw = await start_gateway(aiohttp_client, make_settings(sqlite_url, max_body_bytes=512 * 1024))
    admin = await gw.user("root@example.com", admin=True)
    key = await gw.key(admin, ["unrestricted"])
    long_label = await gw.api.post(
        "/api/v1/api-keys", key=key.text, json_body={"label": "x" * 10_000}
    )
    assert long_label.status == 422
    assert long_label.json() == [
        {"path": "label", "message": "the label may be at most 255 characters"}
    ]
    many = await gw.api.post(
        "/api/v1/api-keys",
        key=key.text,
        json_body={"permissions": ["demo.reports.read"] * 10_000},
    )
    assert many.status == 422
    assert many.json() == [{"path": "permissions", "message": "at most 256 entries"}]
    many_bad = await gw.api.post(
        "/api/v1/api-keys", key=key.text, json_body={"permissions": [5] * 200}
    )
    assert many_bad.status == 422
    assert len(many_bad.json()) == 20  # capped


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/api/v1/api-keys", "application/json"), ("/v1/apikeys", "application/problem+json")],
)
async def test_huge_body_is_413_in_the_surface_shape(
    gw: Gateway, admin_key: NewKey, path: str, content_type: str
) -> None:
    """A body over max_body_bytes is 413 in that surface's shape, declared length or chunked."""
    huge = json.dumps({"label": "x" * 100_000}).encode()
    reply = await gw.api.post(path, key=admin_key.text, data=huge)
    assert reply.status == 413
    assert reply.headers["Content-Type"].startswith(content_type)
    assert reply.json()["code"] == "payload-too-large"

    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1000

    async with gw.raw.post(
        path, data=chunks(), headers={"Authorization": f"token {admin_key.text}"}
    ) as response:
        assert response.status == 413
        assert (await response.json(content_type=None))["code"] == "payload-too-large"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/apikeys", None),
        ("/v1/apikeys", []),
        ("/v1/apikeys", {"name": "x"}),
        ("/v1/apikeys", {"name": "", "scopes": ""}),
        ("/v1/apikeys", {"name": "x", "scopes": ["sale:read"]}),
        ("/v1/apikeys", {"name": "x", "scopes": "", "unknown": 1}),
        ("/v1/apikeys", {"name": "x", "scopes": "nope:nope"}),
        ("/v1/apikeys", {"name": "x\u0007", "scopes": ""}),
        ("/v1/apikeys", {"name": "x", "scopes": "", "path": "relative"}),
        ("/v1/apikeys", {"name": "x", "scopes": "", "path": "/a/../b"}),
        ("/v1/admin/users", {}),
        ("/v1/admin/users", {"email": "not an email", "password": "long enough pw"}),
        ("/v1/admin/users", {"email": "a@example.com"}),
        ("/v1/admin/users", {"email": "a@example.com", "password": "short"}),
        ("/v1/admin/users", {"email": "a@example.com", "service": True, "password": "pw123456"}),
        ("/v1/admin/users", {"email": "a@example.com", "admin": "yes", "password": "pw123456"}),
        ("/v1/admin/users", {"email": "a@example.com", "service": True, "grants": ["x:"]}),
    ],
)
async def test_v1_rejects_bad_bodies_with_problem_422(
    gw: Gateway, admin_key: NewKey, path: str, body: Any
) -> None:
    """Every malformed /v1 body is a 422 problem+json whose `errors` name the members."""
    reply = await gw.api.post(path, key=admin_key.text, json_body=body)
    assert reply.status == 422, reply.text
    problem = reply.json()
    assert problem["code"] == "validation-failed"
    assert problem["errors"]
    assert reply.headers["Content-Type"].startswith("application/problem+json")


async def test_two_credentials_are_400(gw: Gateway, admin_key: NewKey) -> None:
    """Authorization and X-API-KEY together are a 400, on both surfaces."""
    headers = {"Authorization": f"token {admin_key.text}", "X-API-KEY": admin_key.text}
    greenfield = await gw.api.get("/api/v1/api-keys/current", headers=headers)
    assert greenfield.status == 400
    assert greenfield.json()["code"] == "duplicate-credential"
    v1 = await gw.api.get("/v1/apikeys", headers=headers)
    assert v1.status == 400
    assert v1.json()["code"] == "duplicate-credential"


@pytest.mark.parametrize(
    "authorization",
    [
        "token apk_short",
        "token apk_" + "A" * 54,  # bad checksum
        "Basic !!!not-base64!!!",
        "Basic " + "aGFwbG86",  # "haplo:" with no key
        "Digest abc",
        "token ",
    ],
)
async def test_malformed_credentials_are_401_never_500(gw: Gateway, authorization: str) -> None:
    """Malformed keys and headers are 401 JSON on both surfaces."""
    for path in ("/api/v1/api-keys/current", "/v1/apikeys"):
        reply = await gw.api.get(path, headers={"Authorization": authorization})
        assert reply.status == 401, (path, reply.text)


async def test_wrong_methods_are_405_json_with_allow(gw: Gateway) -> None:
    """A method an API path does not take is a 405 in the surface's shape, never the data plane."""
    greenfield = await gw.api.request("PUT", "/api/v1/api-keys/current")
    assert greenfield.status == 405
    assert greenfield.headers["Allow"] == "DELETE, GET, HEAD"
    assert greenfield.json()["code"] == "method-not-allowed"
    v1 = await gw.api.request("PUT", "/v1/apikeys")
    assert v1.status == 405
    assert v1.headers["Content-Type"].startswith("application/problem+json")


async def test_unknown_api_paths_answer_json(gw: Gateway) -> None:
    """An unknown /api/v1/... path falls to the data plane, which answers problem+json 404."""
    async with gw.raw.get("/api/v1/api-keys/a/b/c") as response:
        assert response.status == 404
        assert response.headers["Content-Type"].startswith("application/problem+json")
        json.loads(await response.read())


async def test_bad_pagination_is_422(gw: Gateway, admin_key: NewKey) -> None:
    """page and pageSize outside their ranges are 422s naming the parameter."""
    for query, name in [
        ("?page=0", "page"),
        ("?pageSize=101", "pageSize"),
        ("?pageSize=abc", "pageSize"),
        ("?page=%EF%BC%91", "page"),
    ]:
        reply = await gw.api.get("/v1/apikeys" + query, key=admin_key.text)
        assert reply.status == 422
        assert [e["path"] for e in reply.json()["errors"]] == [name]


# -- text with no UTF-8 form (a JSON `\ud800` escape left unpaired) ----------------------------

LONE = "\ud800"

SURROGATE_BODIES = [
    pytest.param("/api/v1/api-keys", {"label": "a" + LONE}, "label", id="greenfield-label"),
    pytest.param(
        "/api/v1/api-keys", {"permissions": ["\udfff"]}, "permissions[0]", id="greenfield-perm"
    ),
    pytest.param(
        "/api/v1/users/bob@example.com/api-keys", {"label": LONE}, "label", id="greenfield-user"
    ),
    pytest.param("/api/v1/api-keys", {"lab" + LONE + "el": "x"}, "lab\\ud800el", id="name"),
    pytest.param("/v1/apikeys", {"name": "k" + LONE, "scopes": ""}, "name", id="v1-name"),
    pytest.param(
        "/v1/apikeys", {"name": "k", "scopes": "", "path": "/a" + LONE}, "path", id="v1-path"
    ),
    pytest.param(
        "/v1/admin/users",
        {"email": "a" + LONE + "@example.com", "password": "long enough pw"},
        "email",
        id="admin-email",
    ),
    pytest.param(
        "/v1/admin/users",
        {"email": "a@example.com", "password": "long enough " + LONE},
        "password",
        id="admin-password",
    ),
    pytest.param(
        "/v1/admin/users",
        {"email": "s@example.com", "service": True, "grants": ["ok", "x" + LONE]},
        "grants[1]",
        id="admin-grants",
    ),
]


@pytest.fixture
async def gw_any_store(aiohttp_client: Any, store_url: str) -> Gateway:
    """A gateway on SQLite and on PostgreSQL: each driver failed its own way on such text."""
    return await start_gateway(aiohttp_client, make_settings(store_url, max_body_bytes=4096))


@pytest.mark.parametrize(("path", "body", "field"), SURROGATE_BODIES)
async def test_lone_surrogates_are_422_naming_the_field_on_both_stores(
    gw_any_store: Gateway, path: str, body: Any, field: str
) -> None:
    """A string with no UTF-8 form is a 422 naming its member, before any store is touched."""
    gw = gw_any_store
    admin = await gw.user("root@example.com", admin=True)
    await gw.user("bob@example.com")
    key = await gw.key(admin, ["unrestricted"])
    raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as `\ud800`
    assert b"\\ud" in raw
    reply = await gw.api.post(
        path, key=key.text, data=raw, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 422, reply.text
    if path.startswith("/api/"):
        assert [e["path"] for e in reply.json()] == [field]
    else:
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert [e["path"] for e in reply.json()["errors"]] == [field]
    assert len(await gw.services.store.list_users()) == 2
    assert await gw.services.keys.list_for(admin.id) == [key.record]


async def test_paired_surrogate_escapes_are_ordinary_text(gw: Gateway, admin_key: NewKey) -> None:
    """A correctly paired escape (`\\ud83d\\udd11`, a key emoji) is accepted as that character."""
    reply = await gw.api.post(
        "/api/v1/api-keys",
        key=admin_key.text,
        data=b'{"label": "\\ud83d\\udd11 deploy"}',
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply.text
    assert reply.json()["label"] == "\U0001f511 deploy"


async def test_undecodable_escapes_in_paths_and_queries_are_plain_not_found(
    gw: Gateway, admin_key: NewKey
) -> None:
    """`%ED%A0%80` (an encoded surrogate) in a path parameter or query is never a 5xx."""
    user = await gw.api.get("/v1/admin/users/%ED%A0%80", key=admin_key.text)
    assert user.status == 404
    keys = await gw.api.get("/v1/apikeys?page=%ED%A0%80", key=admin_key.text)
    assert keys.status == 422
    greenfield = await gw.api.delete("/api/v1/api-keys/%ED%A0%80", key=admin_key.text)
    assert greenfield.status == 404

"""Keeping the OpenAPI document true: every API response the tests see is checked against it.

`check_response(method, path, status, headers, body)` finds the documented operation for a
concrete path, requires the status to be documented for it, the media type to be the one
documented, the declared required headers to be present, and the body to validate (JSON
Schema 2020-12, references resolved inside the document). A method the document does not
list for a known path must be a 405 in that surface's error shape.

`CheckedClient` wraps pytest-aiohttp's test client and checks each reply, so the API tests
cannot drift from the document without failing. `start_gateway` and the small factories below
build a gateway with real services for those tests.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.api.openapi import load_document
from gateway.app import create_app
from gateway.keys.manage import NewKey
from gateway.services import Services
from gateway.settings import Settings
from gateway.state import SERVICES
from gateway.store.base import Audit, User
from gateway.users import new_user_id

DOCUMENT = load_document()
_BASE = "urn:keygate:openapi"
_REGISTRY: Registry = Registry().with_resource(
    _BASE, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)
_TEMPLATES = [
    (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"), path)
    for path in DOCUMENT["paths"]
]
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _node(pointer: str) -> Any:
    node: Any = DOCUMENT
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _follow(pointer: str) -> str:
    """The pointer of the object a `$ref` at `pointer` names (or `pointer` itself)."""
    ref = _node(pointer).get("$ref")
    return ref[1:] if isinstance(ref, str) else pointer


def validate(instance: Any, pointer: str) -> None:
    """Validate `instance` against the schema at `pointer` in the document."""
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"{_BASE}#{pointer}"},
        registry=_REGISTRY,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        shown = "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        raise AssertionError(f"response does not match {pointer}: {shown}\n{instance!r}")


def template_for(path: str) -> str | None:
    matches = [t for regex, t in _TEMPLATES if regex.match(path)]
    # A literal path (`/api/v1/api-keys/current`) wins over a template that also matches it.
    matches.sort(key=lambda t: t.count("{"))
    return matches[0] if matches else None


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def check_response(
    method: str, path: str, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """Raise AssertionError unless this response is one the document describes."""
    path = path.split("?", 1)[0]
    template = template_for(path)
    assert template is not None, f"{path} is not in the OpenAPI document"
    item = DOCUMENT["paths"][template]
    operation = item.get(method.lower())
    if operation is None and method.upper() == "HEAD":
        operation = item.get("get")
    if operation is None:
        assert status == 405, f"{method} {path}: undocumented method answered {status}, not 405"
        assert "Allow" in headers, "a 405 must say which methods are allowed"
        surface = "GreenfieldError" if path.startswith("/api/") else "Problem"
        validate(json.loads(body), _pointer("components", "schemas", surface))
        return
    op_pointer = _pointer("paths", template, method.lower() if method.upper() != "HEAD" else "get")
    responses = operation["responses"]
    key = str(status) if str(status) in responses else "default"
    assert key in responses, f"{method} {path} answered {status}, which is not documented"
    response_pointer = _follow(op_pointer + _pointer("responses", key))
    response = _node(response_pointer)
    for name, header in response.get("headers", {}).items():
        header = _node(_follow(response_pointer + _pointer("headers", name)))
        if header.get("required"):
            assert name in headers, f"{method} {path} {status}: header {name} is missing"
    content = response.get("content")
    if not content or method.upper() == "HEAD":
        assert not body, f"{method} {path} {status}: documented without a body, got {body[:80]!r}"
        return
    media = _media(headers.get("Content-Type", ""))
    assert media in content, f"{method} {path} {status}: {media!r} is not one of {list(content)}"
    if "json" in media:
        instance = json.loads(body)
        validate(instance, response_pointer + _pointer("content", media, "schema"))


# -- the checked client ----------------------------------------------------------------------


def basic_token(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class CheckedClient:
    """Requests through the test client; every reply is checked against the document."""

    client: TestClient[Any, Any]
    checked: int = 0
    methods_seen: set[tuple[str, str, int]] = field(default_factory=set)

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        scheme: str = "token",
        headers: Mapping[str, str] | None = None,
        basic: tuple[str, str] | None = None,
        json_body: Any = None,
        data: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if key is not None:
            if scheme == "x-api-key":
                sent["X-API-KEY"] = key
            else:
                sent["Authorization"] = f"{scheme} {key}"
        if basic is not None:
            sent["Authorization"] = "Basic " + basic_token(*basic)
        kwargs: dict[str, Any] = {"headers": sent, "params": params}
        if json_body is not None:
            kwargs["json"] = json_body
        elif data is not None:
            kwargs["data"] = data
        async with self.client.request(method, path, **kwargs) as response:
            body = await response.read()
            reply = Reply(response.status, response.headers, body)
        check_response(method, path, reply.status, reply.headers, reply.body)
        self.checked += 1
        template = template_for(path.split("?", 1)[0]) or path
        self.methods_seen.add((method.upper(), template, reply.status))
        return reply

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Reply:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> Reply:
        return await self.request("PUT", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Reply:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)


# -- a gateway for the tests -----------------------------------------------------------------


@dataclass
class Gateway:
    api: CheckedClient
    raw: TestClient[Any, Any]
    services: Services

    async def user(
        self,
        email: str,
        *,
        admin: bool = False,
        service: bool = False,
        grants: Sequence[str] = (),
        password: str | None = None,
    ) -> User:
        """A user. Without a password he is stored directly (no Argon2 cost) and simply
        cannot log in; with one he goes through UserService like any other."""
        if password is not None:
            return await self.services.users.create(
                email=email, password=password, actor="test", is_admin=admin, grants=grants
            )
        user = User(
            id=new_user_id(),
            email=email,
            password_hash=None,
            is_admin=admin,
            is_service=service,
            disabled=False,
            grants=self.services.users.normalise_grants(grants),
            created_at=datetime.now(UTC),
        )
        return await self.services.store.create_user(
            user, Audit("test", "user.create", f"user:{user.id}")
        )

    async def key(
        self, owner: User, permissions: Sequence[str] = (), *, path: str | None = None
    ) -> NewKey:
        """A key minted the way the CLI mints one (limited only by the owner's grants)."""
        return await self.services.keys.create(
            owner=owner, creator=None, label="test", permissions=permissions, path_rule=path
        )


async def start_gateway(aiohttp_client: Any, settings: Settings) -> Gateway:
    client = await aiohttp_client(create_app(settings))
    return Gateway(CheckedClient(client), client, client.app[SERVICES])

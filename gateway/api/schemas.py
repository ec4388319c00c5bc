"""Request bodies and response shapes of the APIs. Pure: values in, values (or Invalid) out.

Validation collects every problem of a body into one 422 (`[(path, message)]`) instead of
stopping at the first, and caps the list so a 10,000-item body cannot make a 10,000-line
answer. The catalog checks (known permission, label rules) are `KeyService`'s and run after
these shape checks; the OpenAPI document (`openapi.yaml`) describes the same shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.errors import Invalid
from gateway.keys import format as keyformat
from gateway.keys import idle
from gateway.keys.manage import MAX_PERMISSIONS
from gateway.policy.model import RESOURCE_RE
from gateway.store.base import ApiKey, Resource, User

MAX_ERRORS = 20
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_RESOURCE_NAME = 200

Errors = list[tuple[str, str]]

EMPTY: Any = object()  # a request without a body (not the same as a JSON null)


def _object(
    body: object, *, required: Iterable[str] = (), optional: Iterable[str] = ()
) -> tuple[Mapping[str, Any], Errors]:
    """The body as an object, with errors for unknown and missing members."""
    if body is EMPTY:
        body = {}
    if not isinstance(body, dict):
        raise Invalid([("body", "expected a JSON object")])
    required = tuple(required)
    known = set(required) | set(optional)
    errors: Errors = [
        (name, f"unknown field (allowed: {', '.join(sorted(known)) or 'none'})")
        for name in body
        if name not in known
    ]
    errors += [(name, "this field is required") for name in required if name not in body]
    return body, errors


def _raise(errors: Errors) -> None:
    if errors:
        raise Invalid(errors[:MAX_ERRORS])


def _string_list(value: object, path: str, errors: Errors) -> tuple[str, ...]:
    if not isinstance(value, list):
        errors.append((path, "must be an array of strings"))
        return ()
    if len(value) > MAX_PERMISSIONS:
        errors.append((path, f"at most {MAX_PERMISSIONS} entries"))
        return ()
    for i, item in enumerate(value):
        if not isinstance(item, str):
            errors.append((f"{path}[{i}]", "must be a string"))
    return tuple(v for v in value if isinstance(v, str))


# -- Greenfield ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """A key to mint. `label` is checked by `KeyService.check_label` (type, length, controls)."""

    label: object
    permissions: tuple[str, ...]
    path: str | None = None
    expires_at: datetime | None = None
    networks: tuple[str, ...] | None = None  # the IP allow-list; None: any address


def greenfield_key_request(body: object) -> KeyRequest:
    """`{label?, permissions?}`; both nullable, nothing else (additionalProperties: false).

    An empty body is a key with no permissions, as in BTCPay: it only proves who made it.
    """
    data, errors = _object(body, optional=("label", "permissions"))
    label = data.get("label")
    if label is not None and not isinstance(label, str):
        errors.append(("label", "must be a string or null"))
    raw = data.get("permissions")
    permissions = () if raw is None else _string_list(raw, "permissions", errors)
    _raise(errors)
    return KeyRequest(label, permissions)


def api_key_data(key: ApiKey, full_key: str | None = None) -> dict[str, Any]:
    """Greenfield's ApiKeyData, exactly: the whole key only where the caller holds it anyway."""
    return {
        "apiKey": full_key if full_key is not None else keyformat.mask(key.id),
        "label": key.label,
        "permissions": list(key.permissions),
    }


# -- /v1/apikeys ----------------------------------------------------------------------------


def v1_key_request(body: object, *, now: datetime | None = None) -> KeyRequest:
    """`{name, scopes, path?, expiresAt?, limits?, allowedNetworks?}`: scopes space-separated
    `audience:operation`; `expiresAt` an RFC 3339 date-time with its offset, in the future."""
    data, errors = _object(
        body, required=("name", "scopes"), optional=("path", "expiresAt", "limits", NETWORKS)
    )
    name = data.get("name")
    if "name" in data and not isinstance(name, str):
        errors.append(("name", "must be a string"))
    elif isinstance(name, str) and not name.strip():
        errors.append(("name", "must not be empty"))
    scopes = data.get("scopes")
    if "scopes" in data and not isinstance(scopes, str):
        errors.append(("scopes", "must be a string of space-separated scopes"))
    path = data.get("path")
    if path is not None and not isinstance(path, str):
        errors.append(("path", "must be a string ('/prefix' or '=/exact/path') or null"))
    expires_at = _moment(data.get("expiresAt"), "expiresAt", now or datetime.now(UTC), errors)
    networks = _networks(data, errors)
    _raise(errors)
    assert isinstance(scopes, str)
    rule = path if isinstance(path, str) else None
    return KeyRequest(name, tuple(scopes.split()), rule, expires_at, networks)


def _moment(value: object, path: str, now: datetime, errors: Errors) -> datetime | None:
    """An RFC 3339 date-time with an offset (`2030-12-31T23:59:59Z`), later than `now`."""
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append((path, "must be a date-time string such as 2030-12-31T23:59:59Z, or null"))
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    # "T" required: RFC 3339 date-times only, not the other forms fromisoformat reads.
    if moment is None or "T" not in value.upper() or moment.tzinfo is None:
        errors.append((path, "expected a date-time with its offset, e.g. 2030-12-31T23:59:59Z"))
        return None
    if moment <= now:
        errors.append((path, "the expiry must be in the future"))
        return None
    return moment.astimezone(UTC)


NETWORKS = "allowedNetworks"


def _networks(data: Mapping[str, Any], errors: Errors) -> tuple[str, ...] | None:
    """`allowedNetworks`: an array of CIDR strings, or null (any address)."""
    raw = data.get(NETWORKS)
    return None if raw is None else _string_list(raw, NETWORKS, errors)


@dataclass(frozen=True, slots=True)
class KeyPatch:
    status: str | None  # "active" / "disabled"
    name: object | None
    networks_given: bool = False  # `allowedNetworks` was sent (null clears the list)
    networks: tuple[str, ...] | None = None


def v1_key_patch(body: object) -> KeyPatch:
    data, errors = _object(body, optional=("status", "name", "limits", "credits", NETWORKS))
    if not data and not errors:
        errors.append(("body", f"send status, name, limits, credits and/or {NETWORKS}"))
    status = data.get("status")
    store_status = None
    if "status" in data:
        if isinstance(status, str) and status.lower() in {"active", "disabled"}:
            store_status = status.lower()
        else:
            errors.append(("status", "must be Active or Disabled"))
    name = data.get("name")
    if "name" in data and (not isinstance(name, str) or not name.strip()):
        errors.append(("name", "must be a non-empty string"))
    networks = _networks(data, errors)
    _raise(errors)
    return KeyPatch(store_status, name, NETWORKS in data, networks)


def password_request(body: object) -> str:
    """`{password}`: the caller's own password, sent again (decrypt, re-authentication)."""
    data, errors = _object(body, required=("password",))
    password = data.get("password")
    if "password" in data and (not isinstance(password, str) or not password):
        errors.append(("password", "must be a non-empty string"))
    _raise(errors)
    assert isinstance(password, str)
    return password


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, to the second (`2024-05-16T10:30:00Z`)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def v1_key(key: ApiKey, full_key: str | None = None, *, idle_days: float = 0.0) -> dict[str, Any]:
    """A key as `/v1/apikeys` shows it; `key` only at creation and on decrypt. With
    `idle_days` (the deployment's idle_key_days), when it will be disabled if left unused."""
    body: dict[str, Any] = {"id": key.id}
    if full_key is not None:
        body["key"] = full_key
    body.update(
        {
            "name": key.label,
            "maskedApiKey": keyformat.mask(key.id),
            "status": "Active" if key.status == "active" else "Disabled",
            "scopes": " ".join(key.permissions),
            "path": key.path_rule,
            "createdAt": iso(key.created_at),
            "expiresAt": iso(key.expires_at),
            "lastUsedAt": iso(key.last_used_at),
            "legacy": key.legacy,
            "replacedBy": key.replaced_by,
            "leakedAt": iso(key.leaked_at),
            "idleDisableAt": iso(idle.disable_at(key, idle_days)),
            NETWORKS: list(key.allowed_networks) if key.allowed_networks is not None else None,
            "_links": {"self": {"href": f"/v1/apikeys/{key.id}", "method": "GET"}},
        }
    )
    return body


# -- pagination -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    number: int  # from 1
    size: int

    def slice(self, items: list[Any]) -> list[Any]:
        start = (self.number - 1) * self.size
        return items[start : start + self.size]


def page_params(query: Mapping[str, str]) -> Page:
    """`?page=` (from 1) and `?pageSize=` (1-100, default 20); 422 on anything else."""
    errors: Errors = []
    values = {}
    for name, default, top in (("page", 1, 1_000_000), ("pageSize", DEFAULT_PAGE_SIZE, 100)):
        raw = query.get(name)
        if raw is None:
            values[name] = default
        elif raw.isascii() and raw.isdigit() and 1 <= int(raw) <= top:
            values[name] = int(raw)
        else:
            errors.append((name, f"must be a whole number from 1 to {top}"))
    _raise(errors)
    return Page(values["page"], values["pageSize"])


def paged(base: str, page: Page, items: list[Any], view: Any) -> dict[str, Any]:
    """One page of `items` with its links (self, next, prev); `view` renders an item."""

    def link(number: int) -> dict[str, str]:
        return {"href": f"{base}?page={number}&pageSize={page.size}", "method": "GET"}

    links = {"self": link(page.number)}
    if page.number * page.size < len(items):
        links["next"] = link(page.number + 1)
    if page.number > 1:
        links["prev"] = link(page.number - 1)
    return {
        "items": [view(item) for item in page.slice(items)],
        "page": page.number,
        "pageSize": page.size,
        "total": len(items),
        "_links": links,
    }


# -- admin ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserCreate:
    email: str
    password: str | None
    admin: bool
    service: bool
    grants: tuple[str, ...]


def user_create_request(body: object) -> UserCreate:
    data, errors = _object(
        body, required=("email",), optional=("password", "admin", "service", "grants")
    )
    email = data.get("email")
    if "email" in data and not isinstance(email, str):
        errors.append(("email", "must be a string"))
    password = data.get("password")
    if password is not None and not isinstance(password, str):
        errors.append(("password", "must be a string or null"))
    for flag in ("admin", "service"):
        if flag in data and not isinstance(data[flag], bool):
            errors.append((flag, "must be true or false"))
    grants = _string_list(data.get("grants", []), "grants", errors)
    _raise(errors)
    assert isinstance(email, str)
    return UserCreate(
        email,
        password if isinstance(password, str) else None,
        bool(data.get("admin", False)),
        bool(data.get("service", False)),
        grants,
    )


@dataclass(frozen=True, slots=True)
class UserPatch:
    disabled: bool | None
    grants: tuple[str, ...] | None
    networks_given: bool = False  # `allowedNetworks` was sent (null clears the list)
    networks: tuple[str, ...] | None = None


def user_patch_request(body: object) -> UserPatch:
    data, errors = _object(body, optional=("disabled", "grants", NETWORKS))
    if not data and not errors:
        errors.append(("body", f"send disabled, grants and/or {NETWORKS}"))
    disabled = data.get("disabled")
    if "disabled" in data and not isinstance(disabled, bool):
        errors.append(("disabled", "must be true or false"))
    grants = _string_list(data["grants"], "grants", errors) if "grants" in data else None
    networks = _networks(data, errors)
    _raise(errors)
    return UserPatch(
        disabled if isinstance(disabled, bool) else None, grants, NETWORKS in data, networks
    )


def resource_request(body: object) -> str:
    data, errors = _object(body, required=("name",))
    name = data.get("name")
    if "name" in data:
        if not isinstance(name, str) or not name.strip():
            errors.append(("name", "must be a non-empty string"))
        elif len(name) > MAX_RESOURCE_NAME or not name.isprintable():
            errors.append(
                ("name", f"at most {MAX_RESOURCE_NAME} printable characters, no control ones")
            )
    _raise(errors)
    assert isinstance(name, str)
    return name.strip()


def user_view(user: User) -> dict[str, Any]:
    """A user as the admin API shows it: never the password hash."""
    return {
        "id": user.id,
        "email": user.email,
        "admin": user.is_admin,
        "service": user.is_service,
        "disabled": user.disabled,
        "grants": list(user.grants),
        "createdAt": iso(user.created_at),
        NETWORKS: list(user.allowed_networks) if user.allowed_networks is not None else None,
    }


def resource_view(resource: Resource) -> dict[str, Any]:
    return {"type": resource.type, "id": resource.id, "name": resource.name}


class KeyRules(Protocol):
    """The catalog checks of `KeyService` that a key request must pass."""

    def check_label(self, label: object, path: str = "label") -> str: ...
    def parse_permissions(self, raws: Sequence[object], path: str = "permissions") -> Any: ...


def check_key_request(
    rules: KeyRules,
    request: KeyRequest,
    *,
    label_path: str = "label",
    perms_path: str = "permissions",
) -> None:
    """Run the label and permission checks together, so one 422 names every problem."""
    errors: Errors = []
    for check in (
        lambda: rules.check_label(request.label, label_path),
        lambda: rules.parse_permissions(request.permissions, perms_path),
    ):
        try:
            check()
        except Invalid as exc:
            errors += exc.errors
    _raise(errors)


def resource_ref(type_: str, id_: str, known_types: Mapping[str, str]) -> tuple[str, str]:
    """A resource's type and id from the path: a type the policy declares, an id a
    permission can name (`name:<id>`)."""
    errors: Errors = []
    if known_types and type_ not in known_types:
        errors.append(("type", f"unknown resource type (known: {', '.join(sorted(known_types))})"))
    elif not RESOURCE_RE.match(type_):
        errors.append(("type", "must be letters, digits, '.', '_', '~' or '-'"))
    if not RESOURCE_RE.match(id_):
        errors.append(("id", "must be 1-128 letters, digits, '.', '_', '~' or '-'"))
    _raise(errors)
    return type_, id_

"""Policy files (YAML) → a validated `Policy`.

`load_policy(paths)` reads each path (a YAML file, or a folder whose `*.yaml` / `*.yml` files
are read in name order) and merges them: resource types, permissions, upstreams and routes
from every file. A permission or an upstream defined twice is an error; a resource type may
be declared again with the same title. A broken policy stops the boot: every problem raises
`PolicyError` naming the file, the entry and the problem, e.g.

    policies/x.yaml: routes[3] (GET /api/{id}): permission 'foo.bar' is not in the catalog

Entries are numbered from 0. Unknown keys are errors (typo safety), and so is a key repeated
within one mapping.

File schema (every section optional; a file may hold only a catalog, only routes, or both):

    resource_types:            # type -> title, for pickers
      store: Store             # or, long form:
      # store: {title: Store, unscoped: held}
    permissions:               # the catalog
      - name: btcpay.store.canviewinvoices     # lower-case: a-z 0-9 . _ : -
        title: View invoices                   # required
        description: View the invoices of a store   # optional
        implies: [btcpay.store.canviewstoresettings]  # optional; names from any file
        scope: store           # optional: the resource type it can be scoped to
    upstreams:
      shop:
        url: http://127.0.0.1:9000   # http or https, host, optional port; no path/query/userinfo
        connect_timeout: 2           # seconds, optional (default 5)
        read_timeout: 30             # seconds, optional (default 60)
        pool_size: 100               # optional (default 100)
    routes:
      - path: /api/v1/stores/{storeId}/invoices
        methods: [GET, POST]         # optional, default ["*"] (any method)
        upstream: shop
        permission: btcpay.store.canviewinvoices:{storeId}
      - path: /public/**
        upstream: shop
        auth: none                   # no credential needed
      - path: /legacy/**
        upstream: shop
        permission: legacy.access
        passwords: true              # optional: Basic email:password accepted here
        websocket: true              # optional: WebSocket upgrades proxied (needs GET)
    limits:                    # named rate limits (gateway/limits/model.py)
      standard: 100/s burst 200        # per key (the default scope)
      pool: 5000/h per owner           # shared by every key of one user
      anonymous: 10/s per address      # per client address
    # and on a route:
    #   limits: [standard, pool]       # every one must pass (auth: none: per-address only)
    #   cost: 5                        # units one request spends (default 1, 0 is free)
    key_limits:                # what a key's own limits may be (without: keys carry none)
      max: standard                    # the loosest per-key limit a user's key may carry
      admin_max: premium               # optional: for administrators' keys (default: max)

Permissions: `implies` forms a DAG (cycles are errors, the cycle is named); nothing may imply
`unrestricted`, which is built in and grants everything. `unrestricted` may be listed to give
it a title, but without `implies` or `scope`. A name `X:Y` where `X` is a scopable permission
is an error, because `X:Y` would also read as `X` scoped to resource `Y`.

Resource types: `unscoped: all` (the default) makes an unscoped permission of that type mean
every resource there is, so only someone who holds it unscoped can grant it; `unscoped: held`
makes it mean every resource the key's owner holds it on (BTCPay's meaning for stores), so an
owner holding it on some resources may grant it unscoped. Each request is checked against the
owner's grants for the resource it names either way. A type declared in two files must have
the same title; a file that leaves `unscoped` out agrees with one that says it.

Routes: exactly one of `permission` and `auth: none`. A permission is a catalog name,
`name:{param}` (the resource is that path parameter) or `name:resource` (a fixed resource);
the last two need a permission with a `scope`. Path templates and matching are described in
`gateway.policy.routes`. Two routes with the same path shape and overlapping methods are an error.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

from gateway.limits.headers import policy_value
from gateway.limits.model import LimitSyntaxError, RateLimit, parse_cost, parse_limit
from gateway.policy.model import (
    NAME_RE,
    RESOURCE_RE,
    UNRESTRICTED,
    Catalog,
    PermissionDef,
    Policy,
    Requirement,
    Route,
    Upstream,
)
from gateway.policy.routes import (
    ANY_METHOD,
    CompiledRoutes,
    DuplicateRouteError,
    TemplateError,
    parse_template,
)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UPSTREAM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESOURCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+)$")  # a DNS name, IPv4 or IPv6

_TOP_KEYS = ("resource_types", "permissions", "upstreams", "routes", "limits", "key_limits")
_KEY_LIMIT_KEYS = ("max", "admin_max")
_PERMISSION_KEYS = ("name", "title", "description", "implies", "scope")
_RESOURCE_TYPE_KEYS = ("title", "unscoped")
_UPSTREAM_KEYS = ("url", "connect_timeout", "read_timeout", "pool_size")
_ROUTE_KEYS = (
    "path",
    "methods",
    "upstream",
    "permission",
    "auth",
    "passwords",
    "websocket",
    "limits",
    "cost",
)
_DEFAULTS = Upstream("defaults", "http://localhost")


class PolicyError(ValueError):
    """A policy file that cannot be loaded; the message names the file, the entry and why."""


@dataclass(frozen=True, slots=True)
class _Where:
    """A place in a policy file, for error messages."""

    file: str
    entry: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.entry}" if self.entry else self.file

    def fail(self, problem: str) -> NoReturn:
        raise PolicyError(f"{self}: {problem}")


@dataclass(frozen=True, slots=True)
class _PermEntry:
    definition: PermissionDef
    where: _Where


@dataclass(frozen=True, slots=True)
class _RouteEntry:
    raw: Mapping[str, Any]
    where: _Where
    source: str


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also rejects a key repeated within one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: let the base class report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def load_policy(paths: Sequence[Path]) -> Policy:
    """Read, merge and validate policy files and folders into a `Policy`."""
    files = _expand(paths)
    builder = _Builder()
    digest = hashlib.sha256()
    for file in files:
        builder.add(str(file), _read(file, digest.update))
    return replace(builder.build(), digest=digest.hexdigest())


def _expand(paths: Sequence[Path]) -> list[Path]:
    if not paths:
        raise PolicyError("no policy files given")
    files: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                (p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()),
                key=lambda p: p.name,
            )
            if not found:
                raise PolicyError(f"{path}: folder holds no .yaml or .yml files")
        elif path.is_file():
            found = [path]
        else:
            raise PolicyError(f"{path}: no such file or folder")
        for file in found:
            if file.resolve() not in seen:  # a file named directly and through its folder
                seen.add(file.resolve())
                files.append(file)
    return files


def _read(file: Path, feed: Callable[[bytes], object]) -> dict[str, Any]:
    """The file's document; its name and text go to `feed` (the policy's digest)."""
    where = _Where(str(file))
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        where.fail("not UTF-8 text")
    except OSError as exc:
        where.fail(f"cannot read: {exc.strerror or exc}")
    for part in (str(file), text):
        data = part.encode("utf-8", "surrogateescape")
        feed(len(data).to_bytes(8, "big") + data)
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        where.fail(f"{line}invalid YAML: {exc.problem or exc.context}")
    except yaml.YAMLError as exc:
        where.fail(f"invalid YAML: {exc}")
    if doc is None:
        where.fail("file is empty (expected a mapping with resource_types, permissions, ...)")
    if not isinstance(doc, dict):
        where.fail(f"expected a mapping at the top level, got {_kind(doc)}")
    _check_keys(doc, _TOP_KEYS, where)
    return doc


class _Builder:
    """Collects entries file by file, then validates what spans files and builds the policy."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        # type -> ((title, "all" | "held" | None when no file says), where first declared)
        self.resource_types: dict[str, tuple[tuple[str, str | None], _Where]] = {}
        self.permissions: dict[str, _PermEntry] = {}
        self.upstreams: dict[str, tuple[Upstream, _Where]] = {}
        self.routes: list[_RouteEntry] = []
        self.limits: dict[str, tuple[RateLimit, _Where]] = {}
        self.key_limits: tuple[Mapping[str, Any], _Where] | None = None

    def add(self, file: str, doc: Mapping[str, Any]) -> None:
        self.sources.append(file)
        types = _mapping(doc.get("resource_types"), _Where(file, "resource_types"))
        for name, title in types.items():
            self._add_resource_type(name, title, _Where(file, f"resource_types.{name}"))
        perms = _list(doc.get("permissions"), _Where(file, "permissions"))
        for index, raw in enumerate(perms):
            self._add_permission(raw, file, index)
        ups = _mapping(doc.get("upstreams"), _Where(file, "upstreams"))
        for name, raw in ups.items():
            self._add_upstream(name, raw, _Where(file, f"upstreams.{name}"))
        for name, raw in _mapping(doc.get("limits"), _Where(file, "limits")).items():
            self._add_limit(name, raw, _Where(file, f"limits.{name}"))
        if "key_limits" in doc:
            where = _Where(file, "key_limits")
            if self.key_limits is not None:
                where.fail(f"key_limits is already given in {self.key_limits[1]}")
            raw_key_limits = _mapping(doc["key_limits"], where)
            _check_keys(raw_key_limits, _KEY_LIMIT_KEYS, where)
            self.key_limits = (raw_key_limits, where)
        for index, raw in enumerate(_list(doc.get("routes"), _Where(file, "routes"))):
            source = f"{file}: routes[{index}]"
            where = _Where(file, f"routes[{index}]{_route_label(raw)}")
            if not isinstance(raw, dict):
                where.fail(f"expected a mapping, got {_kind(raw)}")
            _check_keys(raw, _ROUTE_KEYS, where)
            self.routes.append(_RouteEntry(raw, where, source))

    def _add_resource_type(self, name: str, raw: object, where: _Where) -> None:
        if not RESOURCE_TYPE_RE.match(name):
            where.fail(f"bad resource type name {name!r} (lower-case letters, digits, _ or -)")
        unscoped = None  # not said: the short form, or the long form without `unscoped`
        if isinstance(raw, dict):
            _check_keys(raw, _RESOURCE_TYPE_KEYS, where)
            title = _str(raw.get("title"), where, "title")
            unscoped = raw.get("unscoped")
            if unscoped not in (None, "all", "held"):
                where.fail(f"unscoped must be 'all' or 'held', got {unscoped!r}")
        else:
            title = _str(raw, where, "title")
        earlier = self.resource_types.get(name)
        if earlier is None:
            self.resource_types[name] = ((title, unscoped), where)
            return
        (earlier_title, earlier_unscoped), earlier_where = earlier
        if earlier_title != title:
            where.fail(
                f"resource type {name!r} is declared in {earlier_where} as {earlier_title!r}"
            )
        if unscoped is None or earlier_unscoped == unscoped:
            return
        if earlier_unscoped is not None:
            where.fail(
                f"resource type {name!r} is declared in {earlier_where} "
                f"with unscoped: {earlier_unscoped}"
            )
        # One file says what the other left unsaid.
        self.resource_types[name] = ((title, unscoped), where)

    def _add_permission(self, raw: object, file: str, index: int) -> None:
        name_hint = raw.get("name") if isinstance(raw, dict) else None
        label = f" ({name_hint})" if isinstance(name_hint, str) else ""
        where = _Where(file, f"permissions[{index}]{label}")
        if not isinstance(raw, dict):
            where.fail(f"expected a mapping, got {_kind(raw)}")
        _check_keys(raw, _PERMISSION_KEYS, where)
        name = _permission_name(raw.get("name"), where, "name")
        if name in self.permissions:
            where.fail(f"permission {name!r} is already defined in {self.permissions[name].where}")
        implies = raw.get("implies", [])
        if not isinstance(implies, list):
            where.fail(f"implies must be a list of permission names, got {_kind(implies)}")
        targets = tuple(dict.fromkeys(_permission_name(t, where, "implies") for t in implies))
        scope = raw.get("scope")
        if scope is not None:
            scope = _str(scope, where, "scope")
        if name == UNRESTRICTED and (targets or scope is not None):
            where.fail("unrestricted is built in: it grants everything and takes no implies/scope")
        definition = PermissionDef(
            name=name,
            title=_str(raw.get("title"), where, "title"),
            description=_str(raw.get("description", ""), where, "description", empty=True),
            implies=targets,
            scope=scope,
        )
        self.permissions[name] = _PermEntry(definition, where)

    def _add_limit(self, name: str, raw: object, where: _Where) -> None:
        if name in self.limits:
            where.fail(f"limit {name!r} is already defined in {self.limits[name][1]}")
        try:
            self.limits[name] = (parse_limit(name, raw), where)
        except LimitSyntaxError as exc:
            where.fail(str(exc))

    def _add_upstream(self, name: str, raw: object, where: _Where) -> None:
        if not UPSTREAM_NAME_RE.match(name):
            where.fail(f"bad upstream name {name!r} (letters, digits, '.', '_' or '-')")
        if name in self.upstreams:
            where.fail(f"upstream {name!r} is already defined in {self.upstreams[name][1]}")
        if not isinstance(raw, dict):
            where.fail(f"expected a mapping with at least `url`, got {_kind(raw)}")
        _check_keys(raw, _UPSTREAM_KEYS, where)
        upstream = Upstream(
            name=name,
            url=_upstream_url(raw.get("url"), where),
            connect_timeout=_seconds(raw, "connect_timeout", _DEFAULTS.connect_timeout, where),
            read_timeout=_seconds(raw, "read_timeout", _DEFAULTS.read_timeout, where),
            pool_size=_positive_int(raw, "pool_size", _DEFAULTS.pool_size, where),
        )
        self.upstreams[name] = (upstream, where)

    def build(self) -> Policy:
        catalog = self._catalog()
        routes = [self._route(entry, catalog) for entry in self.routes]
        try:
            table = CompiledRoutes(routes)
        except DuplicateRouteError as exc:
            new, old = exc.route, exc.existing
            raise PolicyError(
                f"{new.source} ({','.join(new.methods)} {new.path}): duplicate route: same "
                f"path shape and overlapping methods as {old.source} "
                f"({','.join(old.methods)} {old.path})"
            ) from None
        return Policy(
            catalog=catalog,
            upstreams={name: up for name, (up, _) in self.upstreams.items()},
            routes=table,
            sources=tuple(self.sources),
            limits={name: limit for name, (limit, _) in self.limits.items()},
            key_limit_max=self._key_limit("max"),
            key_limit_admin_max=self._key_limit("admin_max") or self._key_limit("max"),
        )

    def _key_limit(self, which: str) -> RateLimit | None:
        if self.key_limits is None:
            return None
        raw, where = self.key_limits
        if which not in raw:
            if which == "max":
                where.fail("missing `max` (the loosest limit a key may carry)")
            return None
        name = raw[which]
        if not isinstance(name, str) or name not in self.limits:
            where.fail(f"{which}: {name!r} is not a defined limit (known: {_names(self.limits)})")
        limit = self.limits[name][0]
        if limit.scope != "key":
            where.fail(f"{which}: limit {name!r} is per {limit.scope}; a key's limit is per key")
        return limit

    def _catalog(self) -> Catalog:
        perms = self.permissions
        for entry in perms.values():
            d = entry.definition
            if d.scope is not None and d.scope not in self.resource_types:
                entry.where.fail(
                    f"scope {d.scope!r} is not a declared resource type "
                    f"(declare it under resource_types)"
                )
            for target in d.implies:
                if target == UNRESTRICTED:
                    entry.where.fail("nothing may imply unrestricted")
                if target not in perms:
                    entry.where.fail(f"implies unknown permission {target!r}")
        _check_cycles(perms)
        for name, entry in perms.items():
            head, sep, tail = name.rpartition(":")
            if sep and head in perms and perms[head].definition.scope is not None:
                entry.where.fail(
                    f"permission {name!r} is ambiguous: it also reads as {head!r} "
                    f"scoped to resource {tail!r}"
                )
        types = {name: title for name, ((title, _), _) in self.resource_types.items()}
        held = [name for name, ((_, how), _) in self.resource_types.items() if how == "held"]
        try:
            return Catalog.build((e.definition for e in perms.values()), types, held)
        except ValueError as exc:  # already checked above; kept so nothing slips through
            raise PolicyError(f"{', '.join(self.sources)}: {exc}") from None

    def _route(self, entry: _RouteEntry, catalog: Catalog) -> Route:
        raw, where = entry.raw, entry.where
        path = raw.get("path")
        if path is None:
            where.fail("missing `path`")
        path = _str(path, where, "path")
        try:
            segments = parse_template(path)
        except TemplateError as exc:
            where.fail(f"bad path template {path!r}: {exc}")
        params = [s.value for s in segments if s.kind == "param"]
        methods = _methods(raw.get("methods", [ANY_METHOD]), where)
        upstream = _str(raw.get("upstream"), where, "upstream")
        if upstream not in self.upstreams:
            where.fail(f"upstream {upstream!r} is not defined (known: {_names(self.upstreams)})")
        passwords = _bool(raw, "passwords", where)
        websocket = _bool(raw, "websocket", where)
        if websocket and ANY_METHOD not in methods and "GET" not in methods:
            where.fail("websocket: true needs GET among the methods (upgrades are GET requests)")
        has_auth = "auth" in raw
        if has_auth and raw["auth"] != "none":
            where.fail(
                f"auth must be 'none' (or leave it out and give a permission), got {raw['auth']!r}"
            )
        if has_auth == ("permission" in raw):
            where.fail("give exactly one of `permission` and `auth: none`")
        requirement = None
        if not has_auth:
            text = _str(raw["permission"], where, "permission")
            requirement = _requirement(text, catalog, params, where)
        elif passwords:
            where.fail("passwords: true has no effect on a route with auth: none")
        limits, cost = self._route_limits(raw, has_auth, where)
        return Route(
            path=path,
            methods=methods,
            upstream=upstream,
            requirement=requirement,
            auth_none=has_auth,
            allow_passwords=passwords,
            websocket=websocket,
            source=entry.source,
            limits=limits,
            cost=cost,
            limit_policy=policy_value(limits),
        )

    def _route_limits(
        self, raw: Mapping[str, Any], auth_none: bool, where: _Where
    ) -> tuple[tuple[RateLimit, ...], int]:
        try:
            cost = parse_cost(raw.get("cost", 1))
        except LimitSyntaxError as exc:
            where.fail(str(exc))
        names = raw.get("limits", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            where.fail(f"limits must be a list of limit names, got {names!r}")
        limits: dict[str, RateLimit] = {}
        for name in names:
            if name not in self.limits:
                where.fail(f"limit {name!r} is not defined (known: {_names(self.limits)})")
            if name in limits:
                where.fail(f"limit {name!r} is listed twice")
            limit = self.limits[name][0]
            if auth_none and limit.scope != "address":
                where.fail(
                    f"limit {name!r} is per {limit.scope}, but a route with auth: none has no "
                    "key or owner: only per-address limits apply"
                )
            if cost > limit.burst:
                where.fail(
                    f"cost {cost} is over the burst of limit {name!r} ({limit}): "
                    "no request could ever pass"
                )
            limits[name] = limit
        return tuple(limits.values()), cost


def _check_cycles(perms: Mapping[str, _PermEntry]) -> None:
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            cycle = [*path[path.index(name) :], name]
            perms[cycle[0]].where.fail(f"cycle in implies: {' -> '.join(cycle)}")
        path.append(name)
        for target in perms[name].definition.implies:
            visit(target)
        path.pop()
        done.add(name)

    for name in perms:
        visit(name)


def _requirement(text: str, catalog: Catalog, params: Sequence[str], where: _Where) -> Requirement:
    # Same reading as Catalog.parse: a whole-name match wins, else the text after the last
    # colon is the resource (the loader has ruled out names where both readings apply).
    if text in catalog:
        return Requirement(text)
    head, sep, tail = text.rpartition(":")
    if not sep or head not in catalog:
        where.fail(f"permission {(head if sep else text)!r} is not in the catalog")
    if catalog.permissions[head].scope is None:
        where.fail(f"permission {head!r} has no scope, so it cannot be required as {text!r}")
    if tail.startswith("{") and tail.endswith("}"):
        param = tail[1:-1]
        if param not in params:
            where.fail(
                f"{{{param}}} in permission {text!r} is not a parameter of the path "
                f"(path parameters: {', '.join(params) or 'none'})"
            )
        return Requirement(head, resource_param=param)
    if not RESOURCE_RE.match(tail):
        where.fail(f"bad resource {tail!r} in permission {text!r}")
    return Requirement(head, resource=tail)


def _methods(raw: object, where: _Where) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        where.fail(f"methods must be a non-empty list such as [GET, POST], got {raw!r}")
    methods: dict[str, None] = {}
    for item in raw:
        if not isinstance(item, str):
            where.fail(f"methods: expected a method name, got {_kind(item)}")
        method = item.strip().upper()
        if method != ANY_METHOD and method not in HTTP_METHODS:
            where.fail(
                f"unknown HTTP method {item!r} (known: {', '.join(sorted(HTTP_METHODS))}, *)"
            )
        methods[method] = None
    if ANY_METHOD in methods and len(methods) > 1:
        where.fail("methods: '*' already means every method; list it alone")
    return tuple(methods)


def _upstream_url(raw: object, where: _Where) -> str:
    url = _str(raw, where, "url")
    if any(c.isspace() for c in url) or "?" in url or "#" in url:
        where.fail(f"url {url!r} must be scheme://host[:port] (no spaces, query or fragment)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        where.fail(f"url {url!r}: scheme must be http or https")
    if "@" in parts.netloc:
        where.fail(f"url {url!r} must not contain user info (credentials do not belong here)")
    host = parts.hostname
    if not host or not HOST_RE.match(host):
        where.fail(f"url {url!r} has no valid host")
    try:
        port = parts.port
    except ValueError:
        where.fail(f"url {url!r} has an invalid port")
    if port == 0:
        where.fail(f"url {url!r} has an invalid port")
    if parts.path not in ("", "/"):
        where.fail(f"url {url!r} must not have a path (the request path is forwarded as is)")
    return f"{scheme}://{parts.netloc.lower()}"


def _seconds(raw: Mapping[str, Any], key: str, default: float, where: _Where) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        where.fail(f"{key} must be a positive number of seconds, got {value!r}")
    return float(value)


def _positive_int(raw: Mapping[str, Any], key: str, default: int, where: _Where) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        where.fail(f"{key} must be a positive whole number, got {value!r}")
    return value


def _bool(raw: Mapping[str, Any], key: str, where: _Where) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        where.fail(f"{key} must be true or false, got {value!r}")
    return value


def _str(value: object, where: _Where, key: str, *, empty: bool = False) -> str:
    if value is None:
        where.fail(f"missing `{key}`")
    if not isinstance(value, str):
        where.fail(f"{key} must be a string, got {_kind(value)}")
    if not empty and not value.strip():
        where.fail(f"{key} must not be empty")
    return value


def _permission_name(value: object, where: _Where, key: str) -> str:
    name = _str(value, where, key)
    if not NAME_RE.match(name):
        where.fail(
            f"bad permission name {name!r} in {key} (lower-case letters, digits and . _ : -, "
            "starting with a letter or digit)"
        )
    return name


def _mapping(value: object, where: _Where) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        where.fail(f"expected a mapping, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            where.fail(f"keys must be strings, got {key!r}")
    return value


def _list(value: object, where: _Where) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        where.fail(f"expected a list, got {_kind(value)}")
    return value


def _check_keys(raw: Mapping[Any, Any], allowed: Sequence[str], where: _Where) -> None:
    for key in raw:
        if key in allowed:
            continue
        if not isinstance(key, str):
            where.fail(f"keys must be strings, got {key!r}")
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"
        where.fail(f"unknown key {key!r} ({hint})")


def _route_label(raw: object) -> str:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        return ""
    methods = raw.get("methods", [ANY_METHOD])
    shown = ",".join(str(m) for m in methods) if isinstance(methods, list) else str(methods)
    return f" ({shown} {raw['path']})"


def _names(items: Iterable[str]) -> str:
    return ", ".join(sorted(items)) or "none"


def _kind(value: object) -> str:
    kinds: dict[type, str] = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    if value is None:
        return "nothing"
    return kinds.get(type(value), f"a {type(value).__name__}")

"""The policy's domain values: permissions, the catalog and its implication graph, routes.

Everything here is pure: no I/O, no web framework. The loader builds these from YAML and
validates them; the evaluator reads them on every request, so lookups are precomputed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from gateway.limits.model import RateLimit

UNRESTRICTED = "unrestricted"

# A permission name: lower-case words joined by dots, dashes, underscores or colons
# (`btcpay.store.canviewinvoices`, `sale:read`). Resource ids are free text without spaces.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._:-]*\Z")
RESOURCE_RE = re.compile(r"^[A-Za-z0-9._~-]{1,128}\Z")


class Perm(NamedTuple):
    """A permission: a catalog name, optionally scoped to one resource (`name:resourceId`).

    A named tuple, so that hashing one (the decision memo and the permission-use notes look
    one up per request) runs at C level, not through a generated Python `__hash__`."""

    name: str
    resource: str | None = None

    def __str__(self) -> str:
        return self.name if self.resource is None else f"{self.name}:{self.resource}"


@dataclass(frozen=True, slots=True)
class PermissionDef:
    """One catalog entry."""

    name: str
    title: str = ""
    description: str = ""
    implies: tuple[str, ...] = ()
    scope: str | None = None  # the resource type it can be scoped to, if any


class PermissionError_(ValueError):  # noqa: N801 - trailing underscore avoids the builtin name
    """A permission string that the catalog cannot accept; the message says why."""


class UnknownPermission(PermissionError_):
    """A well-formed permission whose name the catalog does not hold (perhaps a newer
    release's): the authorize flow drops these and says so, as BTCPay does."""


@dataclass(frozen=True, slots=True)
class Catalog:
    """The permission catalog with its transitive implication closure.

    `closure[name]` is every name that `name` grants, itself included. `unrestricted`
    grants every name in the catalog.
    """

    permissions: Mapping[str, PermissionDef]
    closure: Mapping[str, frozenset[str]] = field(default_factory=dict)
    resource_types: Mapping[str, str] = field(default_factory=dict)
    # Resource types whose unscoped permissions mean "every resource the holder has it on"
    # (BTCPay's stores), rather than "every resource there is". See `reaches_held`.
    held_types: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        defs: Iterable[PermissionDef],
        resource_types: Mapping[str, str] | None = None,
        held_types: Iterable[str] = (),
    ) -> Catalog:
        """Build a catalog and its closure; raises ValueError on cycles or unknown names."""
        perms: dict[str, PermissionDef] = {}
        for d in defs:
            perms[d.name] = d
        if UNRESTRICTED not in perms:
            perms[UNRESTRICTED] = PermissionDef(
                UNRESTRICTED, "Unrestricted", "Every permission, on every resource."
            )
        for d in perms.values():
            for target in d.implies:
                if target not in perms:
                    raise ValueError(f"permission {d.name!r} implies unknown permission {target!r}")
        closure: dict[str, frozenset[str]] = {}
        visiting: list[str] = []

        def visit(name: str) -> frozenset[str]:
            if name in closure:
                return closure[name]
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name) :], name])
                raise ValueError(f"cycle in implies: {cycle}")
            visiting.append(name)
            acc = {name}
            for target in perms[name].implies:
                acc |= visit(target)
            visiting.pop()
            closure[name] = frozenset(acc)
            return closure[name]

        for name in perms:
            visit(name)
        closure[UNRESTRICTED] = frozenset(perms)
        return cls(perms, closure, dict(resource_types or {}), frozenset(held_types))

    def __contains__(self, name: object) -> bool:
        return name in self.permissions

    def parse(self, raw: str) -> Perm:
        """Parse `name` or `name:resource` against the catalog (BTCPay's rules).

        The name is trimmed and lower-cased, the resource keeps its case. Because names may
        themselves contain colons (`sale:read`), a whole-string catalog match wins; otherwise
        the text after the last colon is the resource.
        """
        if not isinstance(raw, str):
            raise PermissionError_("a permission must be a string")
        text = raw.strip()
        if not text:
            raise PermissionError_("a permission cannot be empty")
        lowered = text.lower()
        if lowered in self.permissions:
            return Perm(lowered)
        name, sep, resource = text.rpartition(":")
        if not sep:
            raise UnknownPermission(f"unknown permission {text!r}")
        name = name.strip().lower()
        if name not in self.permissions:
            raise UnknownPermission(f"unknown permission {name or text!r}")
        if not resource or not RESOURCE_RE.match(resource):
            raise PermissionError_(f"malformed resource in permission {text!r}")
        definition = self.permissions[name]
        if definition.scope is None and name != UNRESTRICTED:
            raise PermissionError_(f"permission {name!r} cannot be scoped to a resource")
        if name == UNRESTRICTED:
            raise PermissionError_("unrestricted cannot be scoped to a resource")
        return Perm(name, resource)

    def parse_all(self, raws: Iterable[str]) -> tuple[Perm, ...]:
        """Parse many; duplicates removed in first-seen order."""
        seen: dict[Perm, None] = {}
        for raw in raws:
            seen.setdefault(self.parse(raw), None)
        return tuple(seen)

    def grants(self, held: Perm, need: Perm) -> bool:
        """Whether one held permission covers `need` (equal or implying; unscoped or same scope)."""
        if need.name not in self.closure.get(held.name, ()):
            return False
        if held.name == UNRESTRICTED or held.resource is None:
            return True
        return held.resource == need.resource

    def satisfies(self, held: Iterable[Perm], need: Perm) -> bool:
        """Whether any of `held` covers `need`."""
        return any(self.grants(h, need) for h in held)

    def covers(self, held: Iterable[Perm], wanted: Iterable[Perm]) -> tuple[Perm, ...]:
        """The permissions of `wanted` that `held` does not cover (empty when all are)."""
        held_t = tuple(held)
        return tuple(w for w in wanted if not self.satisfies(held_t, w))

    def reaches_held(self, name: str) -> bool:
        """Whether unscoped `name` means "on every resource the owner holds it on".

        For such a permission an owner who holds it on some resources only may still put it
        unscoped on a key: each request is checked against the owner's grants for the
        resource it names, so the key reaches exactly those resources (BTCPay's meaning of
        an unscoped store permission).
        """
        definition = self.permissions.get(name)
        return definition is not None and definition.scope in self.held_types

    def held_on(self, held: Iterable[Perm], name: str) -> tuple[str, ...]:
        """The resources on which scoped permissions of `held` cover `name`, first seen first."""
        definition = self.permissions.get(name)
        if definition is None or definition.scope is None:
            return ()
        found: dict[str, None] = {}
        for h in held:
            if h.resource is not None and name in self.closure.get(h.name, ()):
                found.setdefault(h.resource, None)
        return tuple(found)

    def beyond(self, held: Iterable[Perm], wanted: Iterable[Perm]) -> tuple[Perm, ...]:
        """Like `covers`, but an unscoped `reaches_held` permission counts as held when
        `held` has it on at least one resource: what a holder may put on a key."""
        held_t = tuple(held)
        return tuple(
            w
            for w in wanted
            if not self.satisfies(held_t, w)
            and not (
                w.resource is None and self.reaches_held(w.name) and self.held_on(held_t, w.name)
            )
        )


@dataclass(frozen=True, slots=True)
class Upstream:
    """An upstream HTTP server. `url` is scheme://host[:port] with no path."""

    name: str
    url: str
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    pool_size: int = 100


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a route demands: a permission name, with the resource taken from a path parameter
    (`btcpay.store.canviewinvoices:{storeId}`), a literal resource, or none."""

    name: str
    resource_param: str | None = None
    resource: str | None = None
    # The permission itself when no path parameter scopes it: one object for every request,
    # so decision memos keyed by it are found by identity (no comparison, no new object).
    fixed: Perm | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.resource_param is None:
            object.__setattr__(self, "fixed", Perm(self.name, self.resource))

    def bind(self, params: Mapping[str, str]) -> Perm:
        fixed = self.fixed
        if fixed is not None:
            return fixed
        assert self.resource_param is not None  # (only a parameter leaves `fixed` unset)
        return Perm(self.name, params[self.resource_param])

    def __str__(self) -> str:
        if self.resource_param is not None:
            return f"{self.name}:{{{self.resource_param}}}"
        return self.name if self.resource is None else f"{self.name}:{self.resource}"


@dataclass(frozen=True, slots=True)
class Route:
    """One policy route.

    `path` is a template of `/`-separated segments: literals, `{param}` (exactly one
    segment), and a final `**` (zero or more further segments). `methods` are upper-case;
    `("*",)` means any. `requirement` is None exactly when `auth_none` is true.
    """

    path: str
    methods: tuple[str, ...]
    upstream: str
    requirement: Requirement | None
    auth_none: bool = False
    allow_passwords: bool = False
    websocket: bool = False
    source: str = ""  # "file.yaml: routes[3]" for error messages and `policy explain`
    # Named rate limits every request of the route spends `cost` units of (gateway/limits/),
    # and their `RateLimit-Policy` field, rendered once.
    limits: tuple[RateLimit, ...] = ()
    cost: int = 1
    limit_policy: str = ""


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    params: Mapping[str, str]


class RouteTable(Protocol):
    """Compiled routes; `match` returns the most specific route for a canonical path."""

    def match(self, method: str, path: str) -> RouteMatch | None: ...

    def __iter__(self) -> Iterator[Route]: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything the policy files say, validated."""

    catalog: Catalog
    upstreams: Mapping[str, Upstream]
    routes: RouteTable
    sources: tuple[str, ...] = ()
    # SHA-256 over the files read (names and bytes, in load order): which policy is active.
    digest: str = ""
    limits: Mapping[str, RateLimit] = field(default_factory=dict)
    # The loosest per-key limit a key of a user (of an administrator) may carry; None: keys
    # carry no limits of their own.
    key_limit_max: RateLimit | None = None
    key_limit_admin_max: RateLimit | None = None

    def match(self, method: str, path: str) -> RouteMatch | None:
        return self.routes.match(method, path)

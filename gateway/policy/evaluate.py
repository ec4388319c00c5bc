"""The authorization decision: pure code, no I/O.

`authorize(principal, match, path, catalog)` answers Permitted or Denied; every Denied carries a
machine-readable reason and a human sentence. The status each reason is answered with is chosen
in `gateway/errors.py` (`denial_error`). `path` is the canonical path (see
`paths.canonicalize`), never the raw target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NamedTuple

from gateway.policy.model import UNRESTRICTED, Catalog, Perm, Policy, Route, RouteMatch
from gateway.policy.networks import AddressRule
from gateway.policy.pathrule import PathRule
from gateway.records import maker

MAY_MEMO_SIZE: Final = 256
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Authority:
    """What a caller may do, with everything a decision needs already parsed: the owner and
    its grants, and for a key the key's permissions and rules.

    `key_permissions` is None when the caller authenticated without a key (password or
    session): then the user's own grants are the limit. With a key, a permission must be
    covered by the key *and* by the owner's current grants: a key never widens its owner.

    Nothing in it names one key, so the keys of one owner minted alike hold equal
    authorities, and a worker's key cache keeps one object for all of them (keys/sharing.py).
    """

    user_id: str
    email: str
    grants: tuple[Perm, ...]
    key_permissions: tuple[Perm, ...] | None = None
    path_rule: PathRule | None = None
    is_admin: bool = False
    via: str = "key"  # "key", "password", "session"
    # The key's own rate limits (names from the policy) and whether it pays with credits
    # (gateway/limits/); `limited` is true if either is, so an unlimited key costs one test.
    limits: tuple[str, ...] = ()
    metered: bool = False
    limited: bool = False
    # The client addresses it may call from (the key's and the owner's allow-lists).
    address_rule: AddressRule | None = None
    # Answers of `may`, per requirement. An authority is built from one catalog and cached
    # with its keys, so repeated requests skip the implication walk.
    _memo: dict[Perm, bool] = field(default_factory=dict, compare=False, repr=False)

    def may(self, catalog: Catalog, need: Perm) -> bool:
        answer = self._memo.get(need)
        if answer is None:
            answer = catalog.satisfies(self.grants, need) and (
                self.key_permissions is None or catalog.satisfies(self.key_permissions, need)
            )
            if len(self._memo) < MAY_MEMO_SIZE:
                self._memo[need] = answer
        return answer

    def missing(self, catalog: Catalog, wanted: Iterable[Perm]) -> tuple[Perm, ...]:
        """The permissions of `wanted` this caller could not hand on to a new key.

        An unscoped `reaches_held` permission (BTCPay's "all my stores") can be handed on
        when the owner holds it on some resource and the calling key, if any, holds it
        unscoped: a key scoped to one store must not mint a key for every store.
        """
        return tuple(p for p in wanted if not self._may_hand_on(catalog, p))

    def _may_hand_on(self, catalog: Catalog, p: Perm) -> bool:
        if self.may(catalog, p):
            return True
        if p.resource is not None or not catalog.reaches_held(p.name):
            return False
        key_ok = self.key_permissions is None or catalog.satisfies(self.key_permissions, p)
        return key_ok and bool(catalog.held_on(self.grants, p.name))

    def effective(self, catalog: Catalog) -> tuple[Perm, ...]:
        """The key's permissions that the owner still holds (for identity headers and APIs).

        An unscoped `reaches_held` permission whose owner holds it on some resources only is
        reported scoped to each of them, so an upstream never reads it as "every resource".
        """
        if self.key_permissions is None:
            return self.grants
        out: dict[Perm, None] = {}
        for p in self.key_permissions:
            if catalog.satisfies(self.grants, p):
                out.setdefault(p, None)
            elif p.resource is None and catalog.reaches_held(p.name):
                for resource in catalog.held_on(self.grants, p.name):
                    out.setdefault(Perm(p.name, resource), None)
        return tuple(out)


class Principal:
    """Who is calling: the key, by its id (None for a password or a session), and its
    `authority`, whose fields it also answers for (`principal.user_id`, `principal.may`).

    Two slots: a worker holds one per cached key (keys/state.py's `VerifiedKey` is one), and
    their authorities are shared. The request path reads `principal.authority` directly.
    """

    __slots__ = ("authority", "key_id")

    def __init__(self, authority: Authority, key_id: str | None = None) -> None:
        self.authority = authority
        self.key_id = key_id

    @classmethod
    def of(
        cls,
        user_id: str,
        email: str,
        grants: tuple[Perm, ...],
        *,
        key_id: str | None = None,
        key_permissions: tuple[Perm, ...] | None = None,
        path_rule: PathRule | None = None,
        is_admin: bool = False,
        via: str = "key",
        address_rule: AddressRule | None = None,
    ) -> Principal:
        """A principal with an authority of its own (a password's, a session's, a test's)."""
        authority = Authority(
            user_id,
            email,
            grants,
            key_permissions=key_permissions,
            path_rule=path_rule,
            is_admin=is_admin,
            via=via,
            address_rule=address_rule,
        )
        return cls(authority, key_id)

    def __repr__(self) -> str:
        return f"Principal({self.authority!r}, key_id={self.key_id!r})"

    @property
    def user_id(self) -> str:
        return self.authority.user_id

    @property
    def email(self) -> str:
        return self.authority.email

    @property
    def grants(self) -> tuple[Perm, ...]:
        return self.authority.grants

    @property
    def key_permissions(self) -> tuple[Perm, ...] | None:
        return self.authority.key_permissions

    @property
    def path_rule(self) -> PathRule | None:
        return self.authority.path_rule

    @property
    def is_admin(self) -> bool:
        return self.authority.is_admin

    @property
    def via(self) -> str:
        return self.authority.via

    @property
    def limits(self) -> tuple[str, ...]:
        return self.authority.limits

    @property
    def metered(self) -> bool:
        return self.authority.metered

    @property
    def limited(self) -> bool:
        return self.authority.limited

    @property
    def address_rule(self) -> AddressRule | None:
        return self.authority.address_rule

    def may(self, catalog: Catalog, need: Perm) -> bool:
        return self.authority.may(catalog, need)

    def missing(self, catalog: Catalog, wanted: Iterable[Perm]) -> tuple[Perm, ...]:
        return self.authority.missing(catalog, wanted)

    def effective(self, catalog: Catalog) -> tuple[Perm, ...]:
        return self.authority.effective(catalog)


def owner_grants(catalog: Catalog, raw: Iterable[str], *, is_admin: bool) -> tuple[Perm, ...]:
    """A user's stored grants as permissions; admins hold `unrestricted`.

    Grants that no longer parse (the catalog changed since they were given) are dropped:
    failing closed on a stale grant is the safe direction.
    """
    out: dict[Perm, None] = {Perm(UNRESTRICTED): None} if is_admin else {}
    for text in raw:
        try:
            out.setdefault(catalog.parse(text), None)
        except ValueError:
            continue
    return tuple(out)


class Permitted(NamedTuple):
    """The policy permits the request (a named tuple: built per request)."""

    route: Route
    params: Mapping[str, str] = _NO_PARAMS
    allowed: bool = True
    need: Perm | None = None  # the requirement the principal met (None: no credential needed)


# Built per request: `Permitted(...)` without its Python-level __new__ (records.py).
_permitted: Final = maker(Permitted)


@dataclass(frozen=True, slots=True)
class Denied:
    """The policy denies the request, and why."""

    # "no-route", "method-not-allowed", "unauthenticated", "path-not-allowed",
    # "missing-permission", "no-requirement"
    reason: str
    detail: str
    missing: Perm | None = None
    allowed: bool = False


Verdict = Permitted | Denied


def route_for(method: str, path: str, policy: Policy) -> RouteMatch | Denied:
    """The route for a request, or a "no-route" denial: an unrouted path is never allowed."""
    match = policy.routes.match(method, path)
    if match is None:
        return Denied("no-route", f"no route for {method} {path}")
    return match


def authorize(
    principal: Principal | None, match: RouteMatch, path: str, catalog: Catalog
) -> Verdict:
    """Decide one request whose route is already known.

    `principal` is None only for `auth: none` routes (the caller sent no credential).
    """
    route = match.route
    if route.auth_none:
        return _permitted((route, match.params, True, None))
    if principal is None:
        return Denied("unauthenticated", "this route needs a credential")
    authority = principal.authority
    if authority.path_rule is not None and not authority.path_rule.allows(path):
        return Denied("path-not-allowed", f"the key is limited to {authority.path_rule}")
    requirement = route.requirement
    if requirement is None:  # loader guarantees this cannot happen; deny rather than allow
        return Denied("no-requirement", "route has no requirement")
    need = requirement.fixed  # one object for every request, when no parameter scopes it
    if need is None:
        need = requirement.bind(match.params)
    if not authority.may(catalog, need):
        return Denied("missing-permission", f"requires {need}", missing=need)
    return _permitted((route, match.params, True, need))

"""One copy of what many cached keys hold alike.

A worker caches up to `local_cache_size` verified keys (100,000 by default). Read from the
database or Redis, every key arrives with its own copies of its owner's id, email and grants,
its permission strings and path rule, and builds its own parsed permissions and decision memo:
about 2.7 KB per key. Keys of one owner, and keys minted with the same permissions, hold equal
values; `Sharing` hands out one canonical object per value instead (interning), so a cached key
costs its own few fields and little more (bench/cache_memory.py measures it).

Only immutable values are shared, plus the decision memo, whose answers depend on nothing but
the grants and key permissions it is keyed by (and the catalog, fixed per `Sharing`). The table
is bounded: past `limit` values it starts afresh (already cached keys keep their copies; only
sharing with later ones is lost), so keys that share nothing cannot make it grow without end.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from gateway.policy.evaluate import Principal, owner_grants
from gateway.policy.model import Catalog, Perm
from gateway.policy.networks import AddressRule
from gateway.policy.pathrule import PathRule, parse_path_rule

T = TypeVar("T")

DEFAULT_LIMIT = 200_000


class Sharing:
    """Canonical copies of equal values, for one catalog."""

    __slots__ = ("_catalog", "_limit", "_memos", "_values")

    def __init__(self, catalog: Catalog, limit: int = DEFAULT_LIMIT) -> None:
        self._catalog = catalog
        self._limit = limit
        self._values: dict[Any, Any] = {}
        self._memos: dict[tuple[tuple[Perm, ...], tuple[Perm, ...]], dict[Perm, bool]] = {}

    @property
    def limit(self) -> int:
        return self._limit

    def one(self, value: T) -> T:
        """The canonical object equal to `value` (`value` itself the first time)."""
        found = self._values.get(value)
        if found is not None:
            return found  # type: ignore[no-any-return]
        if len(self._values) >= self._limit:
            self._values.clear()
        self._values[value] = value
        return value

    def memo(self, grants: tuple[Perm, ...], permissions: tuple[Perm, ...]) -> dict[Perm, bool]:
        """The decision memo of every principal with these grants and key permissions."""
        key = (grants, permissions)
        memo = self._memos.get(key)
        if memo is None:
            if len(self._memos) >= self._limit:
                self._memos.clear()
            memo = self._memos[key] = {}
        return memo

    def principal(
        self,
        *,
        user_id: str,
        email: str,
        grants: tuple[str, ...],
        is_admin: bool,
        key_id: str,
        permissions: tuple[str, ...],
        path_rule: str | None,
        limits: tuple[str, ...] = (),
        metered: bool = False,
        address_rule: AddressRule | None = None,
    ) -> Principal:
        """A key's principal, parsed against the catalog, made of shared parts."""
        owned, held = self._parsed(grants, permissions, is_admin=is_admin)
        rule: PathRule | None = self.one(parse_path_rule(path_rule)) if path_rule else None
        return Principal(
            user_id=user_id,
            email=email,
            grants=owned,
            key_id=key_id,
            key_permissions=held,
            path_rule=rule,
            is_admin=is_admin,
            limits=limits,
            metered=metered,
            limited=bool(limits) or metered,
            address_rule=address_rule,
            _memo=self.memo(owned, held),
        )

    def reparsed(
        self, principal: Principal, *, grants: tuple[str, ...], permissions: tuple[str, ...]
    ) -> Principal:
        """`principal` with its grants and key permissions parsed from these texts against this
        catalog (path and address rules do not depend on the catalog and are kept)."""
        owned, held = self._parsed(grants, permissions, is_admin=principal.is_admin)
        return replace(principal, grants=owned, key_permissions=held, _memo=self.memo(owned, held))

    def _parsed(
        self, grants: tuple[str, ...], permissions: tuple[str, ...], *, is_admin: bool
    ) -> tuple[tuple[Perm, ...], tuple[Perm, ...]]:
        catalog = self._catalog
        perms = []
        for text in permissions:
            try:
                perms.append(catalog.parse(text))
            except ValueError:
                continue  # a permission the policy no longer knows grants nothing
        owned = self.one(owner_grants(catalog, grants, is_admin=is_admin))
        return owned, self.one(tuple(perms))

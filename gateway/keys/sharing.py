"""One copy of what many cached keys hold alike.

A worker caches up to `local_cache_size` verified keys (100,000 by default). Read from the
database or Redis, every key arrives with its own copies of its owner's id, email and grants,
its permission strings and path rule, and builds its own parsed permissions, decision memo and
authority: about 2.7 KB per key. Keys of one owner, and keys minted with the same permissions,
hold equal values; `Sharing` hands out one canonical object per value instead (interning), down
to one `Authority` for all the keys of an owner minted alike, so a cached key costs its id,
its hash and a small record (bench/cache_memory.py measures it).

Only immutable values are shared, plus the decision memo, whose answers depend on nothing but
the grants and key permissions it is keyed by (and the catalog, fixed per `Sharing`). The table
is bounded: past `limit` values it starts afresh (already cached keys keep their copies; only
sharing with later ones is lost), so keys that share nothing cannot make it grow without end.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from gateway.policy.evaluate import Authority, owner_grants
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

    def authority(
        self,
        *,
        user_id: str,
        email: str,
        grants: tuple[str, ...],
        is_admin: bool,
        permissions: tuple[str, ...],
        path_rule: str | None,
        limits: tuple[str, ...] = (),
        metered: bool = False,
        address_rule: AddressRule | None = None,
    ) -> Authority:
        """A key's authority, parsed against the catalog: the one object every key of the
        owner with these permissions and rules holds."""
        owned, held = self._parsed(grants, permissions, is_admin=is_admin)
        one = self.one
        rule: PathRule | None = one(parse_path_rule(path_rule)) if path_rule else None
        return one(
            Authority(
                user_id=one(user_id),
                email=one(email),
                grants=owned,
                key_permissions=held,
                path_rule=rule,
                is_admin=is_admin,
                limits=one(limits),
                metered=metered,
                limited=bool(limits) or metered,
                address_rule=one(address_rule),
                _memo=self.memo(owned, held),
            )
        )

    def reparsed(
        self, authority: Authority, *, grants: tuple[str, ...], permissions: tuple[str, ...]
    ) -> Authority:
        """`authority` with its grants and key permissions parsed from these texts against
        this catalog (path and address rules do not depend on the catalog and are kept)."""
        owned, held = self._parsed(grants, permissions, is_admin=authority.is_admin)
        return self.one(
            replace(authority, grants=owned, key_permissions=held, _memo=self.memo(owned, held))
        )

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

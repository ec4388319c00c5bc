"""What a key lookup finds (the record Redis holds), the in-process cache's record built from
it, and the principal a key stands for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.keys.sharing import Sharing
from gateway.policy.evaluate import Authority, Principal
from gateway.policy.model import Catalog
from gateway.policy.networks import AddressRule
from gateway.store.base import KeyWithOwner


@dataclass(frozen=True, slots=True)
class KeyState:
    """What a lookup finds for a key, as Redis holds it: plain data, JSON-serialisable, no
    secret. The in-process cache keeps a smaller record built from it (`VerifiedKey`)."""

    key_id: str
    user_id: str
    email: str
    label: str
    status: str
    expires_at: float | None  # unix time
    owner_disabled: bool
    is_admin: bool
    permissions: tuple[str, ...]
    grants: tuple[str, ...]
    path_rule: str | None
    limits: tuple[str, ...] = ()  # the key's own rate limits (gateway/limits/)
    metered: bool = False  # the key pays with credits
    networks: tuple[str, ...] | None = None  # the key's allow-list (None: any address)
    owner_networks: tuple[str, ...] | None = None  # the owner's, which bounds the key's

    @classmethod
    def from_store(cls, found: KeyWithOwner) -> KeyState:
        key, owner = found.key, found.owner
        return cls(
            key_id=key.id,
            user_id=owner.id,
            email=owner.email,
            label=key.label,
            status=key.status,
            expires_at=key.expires_at.timestamp() if key.expires_at else None,
            owner_disabled=owner.disabled,
            is_admin=owner.is_admin,
            permissions=key.permissions,
            grants=owner.grants,
            path_rule=key.path_rule,
            limits=found.limits,
            metered=found.metered,
            networks=key.allowed_networks,
            owner_networks=owner.allowed_networks,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "user_id": self.user_id,
            "email": self.email,
            "label": self.label,
            "status": self.status,
            "expires_at": self.expires_at,
            "owner_disabled": self.owner_disabled,
            "is_admin": self.is_admin,
            "permissions": list(self.permissions),
            "grants": list(self.grants),
            "path_rule": self.path_rule,
            "limits": list(self.limits),
            "metered": self.metered,
            "networks": _list_or_none(self.networks),
            "owner_networks": _list_or_none(self.owner_networks),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyState:
        return cls(
            key_id=str(data["key_id"]),
            user_id=str(data["user_id"]),
            email=str(data["email"]),
            label=str(data["label"]),
            status=str(data["status"]),
            expires_at=float(data["expires_at"]) if data["expires_at"] is not None else None,
            owner_disabled=bool(data["owner_disabled"]),
            is_admin=bool(data["is_admin"]),
            permissions=tuple(str(p) for p in data["permissions"]),
            grants=tuple(str(g) for g in data["grants"]),
            path_rule=str(data["path_rule"]) if data["path_rule"] is not None else None,
            # Entries cached by an earlier version carry neither: no limits, no credits.
            limits=tuple(str(n) for n in data.get("limits", ())),
            metered=bool(data.get("metered", False)),
            # Required, not defaulted: an entry written by an instance that did not know
            # allow-lists must be re-read from the database, never taken as "any address".
            networks=_tuple_or_none(data["networks"]),
            owner_networks=_tuple_or_none(data["owner_networks"]),
        )


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What is checked again on every use of a cached key (its status, expiry and its owner's
    state) and the permission and grant texts its authority is rebuilt from after a policy
    reload. Equal for most keys of one owner: shared between them (keys/sharing.py)."""

    status: str
    expires_at: float | None  # unix time
    owner_disabled: bool
    permissions: tuple[str, ...]  # as stored (the authority holds them parsed)
    grants: tuple[str, ...]  # the owner's, as stored


class VerifiedKey(Principal):
    """A key that authenticated, as the in-process cache holds it: the key's principal (its
    id and its shared authority) with its shared `facts` and `expires`, when the cache must
    re-validate it (monotonic time).

    A worker holds one per cached key (up to `local_cache_size`), so it holds nothing else:
    four slots, the rest shared between the keys of an owner (bench/cache_memory.py measures
    what a cached key costs). The key's label is not kept.
    """

    __slots__ = ("expires", "facts")

    def __init__(
        self, authority: Authority, key_id: str, facts: KeyFacts, expires: float = 0.0
    ) -> None:
        super().__init__(authority, key_id)
        self.facts = facts
        self.expires = expires

    def __repr__(self) -> str:
        return f"VerifiedKey({self.key_id!r}, {self.facts!r})"

    @property
    def status(self) -> str:
        return self.facts.status

    @property
    def expires_at(self) -> float | None:
        return self.facts.expires_at

    @property
    def owner_disabled(self) -> bool:
        return self.facts.owner_disabled

    def reparsed(self, sharing: Sharing) -> VerifiedKey:
        """The same key, its authority parsed against `sharing`'s catalog (after a reload)."""
        facts = self.facts
        authority = sharing.reparsed(
            self.authority, grants=facts.grants, permissions=facts.permissions
        )
        return VerifiedKey(authority, self.key_id or "", facts, self.expires)


def verified_key(state: KeyState, catalog: Catalog, sharing: Sharing | None = None) -> VerifiedKey:
    """The verified key a key state stands for, parsed against the current catalog (built
    from the parts `sharing` holds already, when given: see sharing.py)."""
    sharing = sharing or Sharing(catalog)
    one = sharing.one
    facts = one(
        KeyFacts(
            one(state.status),
            state.expires_at,
            state.owner_disabled,
            one(state.permissions),
            one(state.grants),
        )
    )
    return VerifiedKey(authority_for(state, sharing), state.key_id, facts)


def principal_for(state: KeyState, catalog: Catalog, sharing: Sharing | None = None) -> Principal:
    """The principal a key state stands for, parsed against the current catalog."""
    return Principal(authority_for(state, sharing or Sharing(catalog)), state.key_id)


def authority_for(state: KeyState, sharing: Sharing) -> Authority:
    return sharing.authority(
        user_id=state.user_id,
        email=state.email,
        grants=state.grants,
        is_admin=state.is_admin,
        permissions=state.permissions,
        path_rule=state.path_rule,
        limits=state.limits,
        metered=state.metered,
        address_rule=AddressRule.of(state.networks, state.owner_networks),
    )


def _list_or_none(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _tuple_or_none(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)

"""What a key lookup finds (the record Redis holds), the in-process cache's record built from
it, and the principal a key stands for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.keys.sharing import Sharing
from gateway.policy.evaluate import Principal
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


class VerifiedKey:
    """A key that authenticated, as the in-process cache holds it: one per cached key (up to
    `local_cache_size` per worker), so only what is used after the lookup is kept.

    `principal` is what requests are decided with; status, expiry and the owner's state are
    checked again on every use; the permission and grant texts rebuild the principal when the
    policy is reloaded; `expires` is when the cache must re-validate it (monotonic time). The
    key's label and the texts its principal holds parsed are not kept: the record's size is
    what a worker pays per key (bench/cache_memory.py).
    """

    __slots__ = (
        "expires",
        "expires_at",
        "grants",
        "owner_disabled",
        "permissions",
        "principal",
        "status",
    )

    def __init__(
        self,
        principal: Principal,
        *,
        status: str,
        expires_at: float | None,
        owner_disabled: bool,
        permissions: tuple[str, ...],
        grants: tuple[str, ...],
        expires: float = 0.0,
    ) -> None:
        self.principal = principal
        self.status = status
        self.expires_at = expires_at  # unix time, or None
        self.owner_disabled = owner_disabled
        self.permissions = permissions  # as stored (the principal holds them parsed)
        self.grants = grants  # the owner's, as stored
        self.expires = expires

    @classmethod
    def of(cls, state: KeyState, principal: Principal) -> VerifiedKey:
        return cls(
            principal,
            status=state.status,
            expires_at=state.expires_at,
            owner_disabled=state.owner_disabled,
            permissions=state.permissions,
            grants=state.grants,
        )

    @property
    def key_id(self) -> str:
        return self.principal.key_id or ""

    def reparsed(self, sharing: Sharing) -> VerifiedKey:
        """The same key, its principal parsed against `sharing`'s catalog (after a reload)."""
        return VerifiedKey(
            sharing.reparsed(self.principal, grants=self.grants, permissions=self.permissions),
            status=self.status,
            expires_at=self.expires_at,
            owner_disabled=self.owner_disabled,
            permissions=self.permissions,
            grants=self.grants,
            expires=self.expires,
        )


def principal_for(state: KeyState, catalog: Catalog, sharing: Sharing | None = None) -> Principal:
    """The principal a key state stands for, parsed against the current catalog (built from
    the parts `sharing` holds already, when given: see sharing.py)."""
    return (sharing or Sharing(catalog)).principal(
        user_id=state.user_id,
        email=state.email,
        grants=state.grants,
        is_admin=state.is_admin,
        key_id=state.key_id,
        permissions=state.permissions,
        path_rule=state.path_rule,
        limits=state.limits,
        metered=state.metered,
        address_rule=AddressRule.of(state.networks, state.owner_networks),
    )


def shared_state(state: KeyState, sharing: Sharing) -> KeyState:
    """`state` with every field that other keys may hold alike replaced by its shared copy."""
    one = sharing.one
    return KeyState(
        key_id=state.key_id,
        user_id=one(state.user_id),
        email=one(state.email),
        label=state.label,
        status=one(state.status),
        expires_at=state.expires_at,
        owner_disabled=state.owner_disabled,
        is_admin=state.is_admin,
        permissions=one(state.permissions),
        grants=one(state.grants),
        path_rule=one(state.path_rule),
        limits=one(state.limits),
        metered=state.metered,
        networks=one(state.networks),
        owner_networks=one(state.owner_networks),
    )


def _list_or_none(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _tuple_or_none(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)

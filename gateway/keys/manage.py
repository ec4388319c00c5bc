"""Minting and managing keys: the rules every surface (CLI, APIs, pages) shares.

A key can only be minted within what its creator holds: each permission must be covered by
the creator (and, for a key creating a key, by that key too), by the owner's grants, and
the path restriction must lie inside the creator's own.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from gateway import events
from gateway.errors import Conflict, Forbidden, Invalid, NotFound
from gateway.keys import format as keyformat
from gateway.keys.hashing import KeyHasher
from gateway.keys.lifecycle import KeyLifecycle
from gateway.keys.minted import NewKey as NewKey
from gateway.keys.minted import actor_of as actor_of
from gateway.keys.vault import KeyVault
from gateway.policy.evaluate import Principal, owner_grants
from gateway.policy.model import Catalog, Perm
from gateway.policy.pathrule import PathRuleError, parse_path_rule
from gateway.store.base import ApiKey, Audit, Store, User

MAX_LABEL = 255
MAX_PERMISSIONS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Invalidate = Callable[[list[bytes]], Awaitable[None]]


def _marks(key: ApiKey) -> dict[str, str]:
    """What an audit record says about the key itself: its format, when imported."""
    return {"legacy": key.legacy} if key.legacy else {}


class KeyService(KeyLifecycle):
    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        hasher: KeyHasher,
        prefix: str,
        invalidate: Invalidate,
        vault: KeyVault | None = None,
        accepted_prefixes: tuple[str, ...] = (),
        accept_legacy: bool = False,
    ) -> None:
        self._store = store
        self._accept_legacy = accept_legacy
        self._catalog = catalog
        self._hasher = hasher
        self._prefix = prefix
        self._accepted_prefixes = accepted_prefixes
        self._invalidate = invalidate
        self._vault = vault

    def use_catalog(self, catalog: Catalog) -> None:
        """Check permissions against `catalog` from now on (the policy was reloaded)."""
        self._catalog = catalog

    @property
    def retrievable(self) -> bool:
        return self._vault is not None

    def parse_permissions(
        self, raws: Sequence[object], path: str = "permissions"
    ) -> tuple[Perm, ...]:
        """Catalog-checked, deduplicated (first seen wins); Invalid names every bad entry."""
        if len(raws) > MAX_PERMISSIONS:
            raise Invalid([(path, f"at most {MAX_PERMISSIONS} permissions per key")])
        errors: list[tuple[str, str]] = []
        out: dict[Perm, None] = {}
        for i, raw in enumerate(raws):
            if not isinstance(raw, str):
                errors.append((f"{path}[{i}]", "a permission must be a string"))
                continue
            try:
                out.setdefault(self._catalog.parse(raw), None)
            except ValueError as exc:
                errors.append((f"{path}[{i}]", str(exc)))
        if errors:
            raise Invalid(errors)
        return tuple(out)

    @staticmethod
    def check_label(label: object, path: str = "label") -> str:
        if label is None:
            return ""
        if not isinstance(label, str):
            raise Invalid([(path, "the label must be a string")])
        if len(label) > MAX_LABEL:
            raise Invalid([(path, f"the label may be at most {MAX_LABEL} characters")])
        if _CONTROL.search(label):
            raise Invalid([(path, "the label may not contain control characters")])
        return label.strip()

    async def create(
        self,
        *,
        owner: User,
        creator: Principal | None,
        label: object,
        permissions: Sequence[object],
        path_rule: str | None = None,
        expires_at: datetime | None = None,
        application_identifier: str | None = None,
        redirect_origin: str | None = None,
        replacing: ApiKey | None = None,
        grace: timedelta = timedelta(0),
        allowed_networks: Sequence[object] | None = None,
    ) -> NewKey:
        """Mint a key for `owner`. `creator` None means the operator's CLI (no limit but the
        owner's own grants). With `replacing` (re-authorizing an application), that key stops
        after `grace`, in the same transaction."""
        clean_label = self.check_label(label)
        perms = self.parse_permissions(permissions)
        rule = None
        if path_rule is not None:
            try:
                rule = parse_path_rule(path_rule)
            except PathRuleError as exc:
                raise Invalid([("path", str(exc))]) from None
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise Invalid([("expires", "the expiry must be in the future")])
        if owner.disabled:
            raise Forbidden("the owner is disabled", code="user-disabled")
        networks = self.check_networks(owner, allowed_networks)

        held = owner_grants(self._catalog, owner.grants, is_admin=owner.is_admin)
        beyond_owner = self._catalog.beyond(held, perms)
        if beyond_owner:
            raise Forbidden(
                f"the owner does not hold {', '.join(map(str, beyond_owner))}",
                code="missing-permission",
                extra={"missingPermission": str(beyond_owner[0])},
            )
        if creator is not None:
            self._check_creator(creator, [str(p) for p in perms], str(rule) if rule else None)

        generated = keyformat.generate(self._prefix)
        record = ApiKey(
            id=generated.key_id,
            key_hash=self._hasher.digest(generated.text),
            secret_fingerprint=self._hasher.fingerprint,
            user_id=owner.id,
            label=clean_label,
            permissions=tuple(str(p) for p in perms),
            path_rule=str(rule) if rule else None,
            status="active",
            created_at=datetime.now(UTC),
            expires_at=expires_at,
            application_identifier=application_identifier,
            redirect_origin=redirect_origin,
            allowed_networks=networks,
            encrypted_key=self._vault.seal(generated.key_id, generated.text)
            if self._vault
            else None,
        )
        detail = {
            "owner": owner.id,
            "label": record.label,
            "permissions": list(record.permissions),
            "path": record.path_rule,
            "expires": expires_at.isoformat() if expires_at else None,
            "application": application_identifier,
            "networks": list(networks) if networks is not None else None,
        }
        audit = Audit(actor_of(creator), "key.create", f"key:{record.id}", detail)
        if replacing is None:
            await self._store.create_key(record, audit)
            return NewKey(generated.text, record)
        previous = await self._retire(replacing, record, grace, creator, [audit], strict=False)
        if previous is None:  # gone or replaced meanwhile: the new key stands on its own
            await self._store.create_key(record, audit)
        return NewKey(generated.text, record, previous)

    def _check_creator(
        self, creator: Principal, permissions: Sequence[str], path_rule: str | None
    ) -> None:
        """Forbidden unless `creator` may hand out `permissions` under `path_rule`."""
        perms = []
        for raw in permissions:
            try:
                perms.append(self._catalog.parse(raw))
            except ValueError:
                continue  # a permission the catalog no longer knows grants nothing
        beyond = creator.missing(self._catalog, perms)
        if beyond:
            raise Forbidden(
                f"you cannot grant {', '.join(map(str, beyond))}",
                code="missing-permission",
                extra={"missingPermission": str(beyond[0])},
            )
        rule = parse_path_rule(path_rule) if path_rule else None
        if creator.path_rule is not None and (rule is None or not rule.within(creator.path_rule)):
            raise Forbidden(
                f"the new key's path restriction must lie within {creator.path_rule}",
                code="path-not-allowed",
            )

    # -- lookups ------------------------------------------------------------------------

    def key_id_of(self, id_or_key: str) -> str | None:
        """A public key id from either a key id or a whole key (Greenfield accepts both)."""
        if keyformat.looks_like_key_id(id_or_key, self._prefix, self._accepted_prefixes):
            return id_or_key
        try:
            return keyformat.parse(id_or_key, self._prefix, self._accepted_prefixes).key_id
        except keyformat.MalformedKey:
            return None

    async def get_owned(self, id_or_key: str, owner_id: str | None) -> ApiKey:
        """A key by id (or whole key); another user's key is "not found", never "forbidden"."""
        key: ApiKey | None
        if self._accept_legacy and keyformat.is_legacy(id_or_key):
            # A legacy key carries no id: it is found by its hash, as on the data plane.
            found = await self._store.find_key_by_hash(self._hasher.digest(id_or_key))
            key = found.key if found is not None else None
        else:
            key_id = self.key_id_of(id_or_key)
            key = await self._store.get_key(key_id) if key_id else None
        if key is None or (owner_id is not None and key.user_id != owner_id):
            raise NotFound("API key not found", code="apikey-not-found")
        return key

    async def list_for(self, user_id: str) -> list[ApiKey]:
        return await self._store.list_keys(user_id)

    # -- changes ------------------------------------------------------------------------

    async def revoke(self, key: ApiKey, *, actor: Principal | None) -> ApiKey:
        deleted = await self._store.delete_key(
            key.id, Audit(actor_of(actor), "key.revoke", f"key:{key.id}", _marks(key))
        )
        if deleted is None:
            raise NotFound("API key not found", code="apikey-not-found")
        await self._invalidate([key.key_hash])
        events.key_changed("key.revoke", key.id, actor_of(actor))
        return deleted

    async def set_status(self, key: ApiKey, status: str, *, actor: Principal | None) -> ApiKey:
        if status not in {"active", "disabled"}:
            raise Invalid([("status", "must be Active or Disabled")])
        action = "key.enable" if status == "active" else "key.disable"
        updated = await self._store.update_key(
            key.id, {"status": status}, Audit(actor_of(actor), action, f"key:{key.id}", _marks(key))
        )
        if updated is None:
            raise NotFound("API key not found", code="apikey-not-found")
        await self._invalidate([key.key_hash])
        events.key_changed(action, key.id, actor_of(actor))
        return updated

    async def rename(self, key: ApiKey, label: object, *, actor: Principal | None) -> ApiKey:
        clean = self.check_label(label, "name")
        updated = await self._store.update_key(
            key.id,
            {"label": clean},
            Audit(actor_of(actor), "key.rename", f"key:{key.id}", {"label": clean, **_marks(key)}),
        )
        if updated is None:
            raise NotFound("API key not found", code="apikey-not-found")
        await self._invalidate([key.key_hash])
        return updated

    def reveal(self, key: ApiKey) -> str | None:
        """The stored copy of a retrievable key (callers check re-authentication and audit)."""
        if self._vault is None or key.encrypted_key is None:
            return None
        return self._vault.open(key.id, key.encrypted_key)

    def check_retrievable(self) -> None:
        """Forbidden, saying why, unless this deployment keeps retrievable keys."""
        if self._vault is None:
            raise Forbidden(
                "this deployment does not keep retrievable keys (GATEWAY_RETRIEVABLE_KEYS is "
                "off): a key is shown once, when it is created",
                code="keys-not-retrievable",
            )

    async def reveal_audited(self, key: ApiKey, *, actor: Principal | None) -> str:
        """The stored copy of a retrievable key, audited before it is handed out.

        Callers check the fresh password first. The audit record is written before the key
        is returned: if it cannot be written, nobody sees the key.
        """
        self.check_retrievable()
        text = self.reveal(key)
        if text is None:
            raise Conflict(
                "this key has no retrievable copy (it was created before retrievable keys were "
                "turned on, or the key-encryption key has changed since)",
                code="key-not-retrievable",
            )
        await self._store.add_audit(Audit(actor_of(actor), "key.decrypt", f"key:{key.id}"))
        return text

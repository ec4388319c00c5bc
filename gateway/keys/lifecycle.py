"""The key lifecycle beyond create and revoke: rotation with a grace period, IP allow-lists,
and the response to a leaked key. A mixin of `KeyService` (keys/manage.py), which holds the
store, hasher, catalog and invalidation these use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.errors import Conflict, Forbidden, Invalid, NotFound
from gateway.keys import format as keyformat
from gateway.keys import rotation
from gateway.keys.minted import NewKey, actor_of
from gateway.policy.evaluate import Principal
from gateway.policy.networks import NetworkError, outside, parse_networks
from gateway.store.base import ApiKey, Audit, User

if TYPE_CHECKING:
    from gateway.keys.hashing import KeyHasher
    from gateway.keys.vault import KeyVault
    from gateway.store.base import Store


class KeyLifecycle:
    # Told the id of a key whose credits moved to its successor, so the rate-limit engine
    # drops what it holds for it (set by the wiring; gateway/limits/).
    on_retired: Callable[[str], Awaitable[None]] | None = None

    if TYPE_CHECKING:
        _store: Store
        _hasher: KeyHasher
        _prefix: str
        _vault: KeyVault | None
        _invalidate: Callable[[list[bytes]], Awaitable[None]]

        def _check_creator(
            self, creator: Principal, permissions: Sequence[str], path_rule: str | None
        ) -> None: ...

    # -- rotation -----------------------------------------------------------------------

    async def rotate(
        self,
        key: ApiKey,
        *,
        grace: timedelta,
        actor: Principal | None,
        permissions: Sequence[str] | None = None,
    ) -> NewKey:
        """A new key with everything `key` has (`rotation.successor`); `key` keeps working
        for `grace` (never past its own expiry), then is refused everywhere. `permissions`
        (a subset of the key's) narrows the new key."""
        now = datetime.now(UTC)
        if key.replaced_by is not None:
            raise Conflict(
                f"this key was already rotated (its successor is {key.replaced_by})",
                code="key-already-rotated",
            )
        if key.expires_at is not None and key.expires_at <= now:
            raise Conflict("an expired key cannot be rotated", code="key-expired")
        if not timedelta(0) <= grace <= rotation.MAX_GRACE:
            raise Invalid([("grace", "the grace period may be at most 7 days")])
        owner = await self._store.get_user(key.user_id)
        if owner is None:
            raise NotFound("API key not found", code="apikey-not-found")
        if owner.disabled:
            raise Forbidden("the owner is disabled", code="user-disabled")
        kept = tuple(key.permissions)
        if permissions is not None:
            beyond = [p for p in permissions if p not in key.permissions]
            if beyond:
                raise Invalid([("permissions", f"the key does not hold {beyond[0]}")])
            kept = tuple(dict.fromkeys(permissions))
        if actor is not None:
            self._check_creator(actor, kept, key.path_rule)
        generated = keyformat.generate(self._prefix)
        record = rotation.successor(
            key,
            key_id=generated.key_id,
            key_hash=self._hasher.digest(generated.text),
            secret_fingerprint=self._hasher.fingerprint,
            encrypted_key=self._vault.seal(generated.key_id, generated.text)
            if self._vault
            else None,
            created_at=now,
            permissions=kept,
        )
        create = Audit(
            actor_of(actor),
            "key.create",
            f"key:{record.id}",
            {
                "owner": owner.id,
                "label": record.label,
                "permissions": list(kept),
                "path": record.path_rule,
                "rotated_from": key.id,
            },
        )
        previous = await self._retire(key, record, grace, actor, [create])
        assert previous is not None  # strict: Conflict otherwise
        return NewKey(generated.text, record, previous)

    async def _retire(
        self,
        old: ApiKey,
        new: ApiKey,
        grace: timedelta,
        actor: Principal | None,
        audits: list[Audit],
        *,
        strict: bool = True,
    ) -> ApiKey | None:
        """Store `new` and make `old` stop after `grace`, in one transaction; drop `old`
        from every cache so its new expiry is seen at once. If `old` was rotated or deleted
        meanwhile nothing is stored: Conflict, or None when not `strict`."""
        stops = rotation.grace_end(datetime.now(UTC), grace, old.expires_at)
        rotate = Audit(
            actor_of(actor),
            "key.rotate",
            f"key:{old.id}",
            {
                "successor": new.id,
                "grace_seconds": int(grace.total_seconds()),
                "stops_at": stops.isoformat(),
            },
        )
        previous = await self._store.replace_key(new, old.id, stops, [*audits, rotate])
        if previous is None:
            if not strict:
                return None
            raise Conflict(
                "this key was rotated or deleted meanwhile; nothing was created",
                code="key-already-rotated",
            )
        await self._invalidate([old.key_hash])
        if self.on_retired is not None:
            await self.on_retired(old.id)
        return previous

    @staticmethod
    def check_networks(owner: User, raws: Sequence[object] | None) -> tuple[str, ...] | None:
        """A key's allow-list: valid CIDR, each inside the owner's list (if he has one)."""
        if raws is None:
            return None
        try:
            networks = parse_networks(raws)
        except NetworkError as exc:
            raise Invalid([("allowedNetworks", str(exc))]) from None
        beyond = outside(networks, owner.allowed_networks)
        if beyond:
            raise Forbidden(
                f"{beyond[0]} is outside the networks the owner's keys may be used from",
                code="network-not-allowed",
            )
        return networks

    async def set_networks(
        self, key: ApiKey, raws: Sequence[object] | None, *, actor: Principal | None
    ) -> ApiKey:
        """Replace (None: clear) a key's allow-list; every instance sees it at once."""
        owner = await self._store.get_user(key.user_id)
        if owner is None:
            raise NotFound("API key not found", code="apikey-not-found")
        networks = self.check_networks(owner, raws)
        shown = list(networks) if networks is not None else None
        updated = await self._store.update_key(
            key.id,
            {"allowed_networks": networks},
            Audit(actor_of(actor), "key.set-networks", f"key:{key.id}", {"networks": shown}),
        )
        if updated is None:
            raise NotFound("API key not found", code="apikey-not-found")
        await self._invalidate([key.key_hash])
        return updated

    # -- leaked keys ----------------------------------------------------------------------

    async def mark_leaked(
        self, key: ApiKey, *, action: str, source: str, url: str, actor: str
    ) -> None:
        """Apply the deployment's response to a key reported leaked: delete it (`revoke`),
        disable it, or only record the report (`notify`); audited as `key.leaked` either way,
        so the owner sees it in his Activity (and, unless revoked, on the key page)."""
        detail = {"effect": action, "source": source[:200], "url": url[:500]}
        audit = Audit(actor, "key.leaked", f"key:{key.id}", detail)
        if action == "revoke":
            done = await self._store.delete_key(key.id, audit) is not None
        else:
            changes: dict[str, object] = {
                "leaked_at": datetime.now(UTC),
                "leak_source": source[:200],
            }
            if action == "disable":
                changes["status"] = "disabled"
            done = await self._store.update_key(key.id, changes, audit) is not None
        if done:
            await self._invalidate([key.key_hash])

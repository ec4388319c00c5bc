"""Verifying a presented key: offline checks, then in-process cache, Redis, database.

::

    parse (no I/O) ─ bad shape/checksum → 401, no store is touched
    HMAC ─ local LRU (seconds) ─ Redis (minutes) ─ database
                     └ negative entries for unknown keys, so a flood of random well-formed
                       keys costs at most one database lookup per distinct key per period

Concurrent misses for the same key share one lookup. If the database cannot be reached,
an in-process entry is served only within its stale window; otherwise 503. Never fail open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.cache.local import LocalCache
from gateway.cache.redis import NEGATIVE, SharedCache
from gateway.errors import Unauthenticated, Unavailable
from gateway.keys import format as keyformat
from gateway.keys.hashing import KeyHasher
from gateway.policy.evaluate import Principal, owner_grants
from gateway.policy.model import Catalog
from gateway.policy.pathrule import parse_path_rule
from gateway.store.base import KeyWithOwner, Store, StoreError

log = logging.getLogger("gateway.keys")


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the caches hold for a key: plain data, JSON-serialisable, no secret."""

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
            permissions=tuple(data["permissions"]),
            grants=tuple(data["grants"]),
            path_rule=data["path_rule"],
        )


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """A key that authenticated: its state and the principal built from it."""

    state: KeyState
    principal: Principal


def principal_for(state: KeyState, catalog: Catalog) -> Principal:
    """The principal a key state stands for, parsed against the current catalog."""
    perms = []
    for text in state.permissions:
        try:
            perms.append(catalog.parse(text))
        except ValueError:
            continue  # a permission the policy no longer knows grants nothing
    return Principal(
        user_id=state.user_id,
        email=state.email,
        grants=owner_grants(catalog, state.grants, is_admin=state.is_admin),
        key_id=state.key_id,
        key_permissions=tuple(perms),
        path_rule=parse_path_rule(state.path_rule) if state.path_rule else None,
        is_admin=state.is_admin,
    )


_Cached = VerifiedKey | None  # None: a negative entry (no such key)


class KeyVerifier:
    """Turns a presented key into a Principal, or raises Unauthenticated / Unavailable."""

    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        hasher: KeyHasher,
        prefix: str,
        shared: SharedCache | None,
        local_ttl: float,
        local_size: int,
        negative_ttl: float,
        stale_window: float,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._hasher = hasher
        self._prefix = prefix
        self._shared = shared
        self._local: LocalCache[_Cached] = LocalCache(local_size)
        self._local_ttl = local_ttl
        self._negative_ttl = negative_ttl
        self._stale_window = stale_window
        self._inflight: dict[bytes, asyncio.Future[_Cached]] = {}
        self._last_used: dict[str, datetime] = {}
        self.lookups = 0  # database lookups, for tests and metrics

    # -- the hot path -------------------------------------------------------------------

    async def verify(self, text: str) -> VerifiedKey:
        try:
            parsed = keyformat.parse(text, self._prefix)
        except keyformat.MalformedKey as exc:
            raise Unauthenticated(
                f"the API key is malformed ({exc.reason})", code="key-malformed"
            ) from None
        digest = self._hasher.digest(parsed.text)
        entry = self._local.get(digest)
        now = time.monotonic()
        if entry is not None and entry.expires > now:
            found = entry.value
        else:
            found = await self._load(
                digest,
                stale=entry.value if entry is not None else None,
                stale_until=(entry.expires + self._stale_window) if entry else 0.0,
            )
        if found is None:
            raise Unauthenticated("the API key is not known", code="key-unknown")
        self._check(found.state)
        self._last_used[found.state.key_id] = datetime.now(UTC)
        return found

    @staticmethod
    def refusal(state: KeyState) -> str | None:
        """Why a known key cannot be used right now, or None."""
        if state.owner_disabled:
            return "owner-disabled"
        if state.status != "active":
            return "key-disabled"
        if state.expires_at is not None and state.expires_at <= time.time():
            return "key-expired"
        return None

    def _check(self, state: KeyState) -> None:
        # Only a caller holding the whole key (id and secret) gets this far, so naming the
        # reason tells nothing to someone who merely knows or guesses a key id.
        reason = self.refusal(state)
        if reason is None:
            return
        log.info("key %s refused: %s", state.key_id, reason)
        raise Unauthenticated(_REASON_TEXT[reason], code=reason)

    async def _load(self, digest: bytes, *, stale: _Cached, stale_until: float) -> _Cached:
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Cached] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            result = await self._fetch(digest, stale, stale_until)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[digest]

    async def _fetch(self, digest: bytes, stale: _Cached, stale_until: float) -> _Cached:
        now = time.monotonic()
        if self._shared is not None:
            cached = await self._shared.get(digest)
            if cached == NEGATIVE:
                self._local.put(digest, None, now + self._negative_ttl)
                return None
            if isinstance(cached, dict):
                try:
                    state = KeyState.from_json(cached)
                except (KeyError, TypeError, ValueError):
                    state = None
                if state is not None:
                    verified = self._verified(state)
                    self._local.put(digest, verified, now + self._local_ttl)
                    return verified
        try:
            self.lookups += 1
            found = await self._store.find_key_by_hash(digest)
        except StoreError as exc:
            if stale is not None and now < stale_until:
                log.warning(
                    "database unavailable; serving key %s from its stale window", stale.state.key_id
                )
                return stale
            log.error("database unavailable while verifying a key: %s", exc)
            raise Unavailable("the key store is unavailable; try again shortly") from None
        if found is None:
            self._local.put(digest, None, now + self._negative_ttl)
            if self._shared is not None:
                await self._shared.put(digest, None)
            return None
        state = KeyState.from_store(found)
        verified = self._verified(state)
        self._local.put(digest, verified, now + self._local_ttl)
        if self._shared is not None:
            await self._shared.put(digest, state.to_json())
        return verified

    def _verified(self, state: KeyState) -> VerifiedKey:
        return VerifiedKey(state, principal_for(state, self._catalog))

    # -- invalidation and housekeeping -------------------------------------------------

    @property
    def cache_size(self) -> int:
        return len(self._local)

    def drop(self, digest: bytes) -> None:
        self._local.drop(digest)

    def reset(self) -> None:
        self._local.clear()

    async def invalidate(self, digests: list[bytes]) -> None:
        """Forget keys here and (through Redis) on every instance."""
        for digest in digests:
            self._local.drop(digest)
        if self._shared is not None:
            await self._shared.invalidate(digests)

    def take_last_used(self) -> dict[str, datetime]:
        taken, self._last_used = self._last_used, {}
        return taken


_REASON_TEXT = {
    "owner-disabled": "the API key's owner is disabled",
    "key-disabled": "the API key is disabled",
    "key-expired": "the API key has expired",
}

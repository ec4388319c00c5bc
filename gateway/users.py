"""Users and their grants: the rules every surface (CLI, APIs, pages) shares."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from gateway.errors import Conflict, Invalid, NotFound
from gateway.passwords import hash_password, password_problem, verify_password
from gateway.policy.model import Catalog
from gateway.policy.networks import NetworkError, parse_networks
from gateway.store import base as store_base
from gateway.store.base import Audit, Store, User

# Deliberately simple: one @, no spaces or control characters, a dot in the domain.
EMAIL_RE = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,190}\.[^@\s\x00-\x1f\x7f]{1,63}\Z"
)

InvalidateUser = Callable[[str], Awaitable[None]]


def new_user_id() -> str:
    return secrets.token_hex(16)


class UserService:
    def __init__(self, store: Store, catalog: Catalog, invalidate_user: InvalidateUser) -> None:
        self._store = store
        self._catalog = catalog
        self._invalidate_user = invalidate_user

    def use_catalog(self, catalog: Catalog) -> None:
        """Check permissions against `catalog` from now on (the policy was reloaded)."""
        self._catalog = catalog

    def normalise_grants(self, grants: Sequence[object], path: str = "grants") -> tuple[str, ...]:
        errors = []
        out: dict[str, None] = {}
        for i, raw in enumerate(grants):
            try:
                if not isinstance(raw, str):
                    raise ValueError("a permission must be a string")
                out.setdefault(str(self._catalog.parse(raw)), None)
            except ValueError as exc:
                errors.append((f"{path}[{i}]", str(exc)))
        if errors:
            raise Invalid(errors)
        return tuple(out)

    async def create(
        self,
        *,
        email: str,
        password: str | None,
        actor: str,
        is_admin: bool = False,
        is_service: bool = False,
        grants: Sequence[str] = (),
    ) -> User:
        email = email.strip()
        if not EMAIL_RE.match(email):
            raise Invalid([("email", f"{email[:80]!r} is not an email address")])
        if is_service and password is not None:
            raise Invalid([("password", "service users cannot log in, so they have no password")])
        if not is_service:
            if password is None:
                raise Invalid([("password", "a password is required")])
            problem = password_problem(password)
            if problem:
                raise Invalid([("password", problem)])
        normalised = self.normalise_grants(grants)
        user = User(
            id=new_user_id(),
            email=email,
            password_hash=await hash_password(password) if password is not None else None,
            is_admin=is_admin,
            is_service=is_service,
            disabled=False,
            grants=normalised,
            created_at=datetime.now(UTC),
        )
        detail = {
            "email": email,
            "admin": is_admin,
            "service": is_service,
            "grants": list(normalised),
        }
        try:
            return await self._store.create_user(
                user, Audit(actor, "user.create", f"user:{user.id}", detail)
            )
        except store_base.Conflict:
            raise Conflict(
                f"a user with email {email!r} already exists", code="user-exists"
            ) from None

    async def find(self, id_or_email: str) -> User:
        user = await self._store.get_user(id_or_email)
        if user is None and "@" in id_or_email:
            user = await self._store.get_user_by_email(id_or_email)
        if user is None:
            raise NotFound("user not found", code="user-not-found")
        return user

    async def authenticate(self, email: str, password: str) -> User | None:
        """The user for these credentials, or None. Service and disabled users never log in;
        the same work is done whether or not the email exists."""
        user = await self._store.get_user_by_email(email) if len(email) <= 320 else None
        ok = await verify_password(password, user.password_hash if user else None)
        if not ok or user is None or user.disabled or user.is_service:
            return None
        return user

    async def update(
        self, user: User, changes: dict[str, object], *, actor: str, action: str
    ) -> User:
        detail = {k: v for k, v in changes.items() if k != "password_hash"}
        updated = await self._store.update_user(
            user.id, changes, Audit(actor, action, f"user:{user.id}", detail)
        )
        if updated is None:
            raise NotFound("user not found", code="user-not-found")
        # Disabling a user or changing grants changes what every one of his keys may do.
        await self._invalidate_user(user.id)
        return updated

    async def set_disabled(self, user: User, disabled: bool, *, actor: str) -> User:
        action = "user.disable" if disabled else "user.enable"
        return await self.update(user, {"disabled": disabled}, actor=actor, action=action)

    async def grant(self, user: User, grants: Sequence[str], *, actor: str) -> User:
        merged = tuple(dict.fromkeys([*user.grants, *self.normalise_grants(grants)]))
        return await self.update(user, {"grants": list(merged)}, actor=actor, action="user.grant")

    async def revoke_grants(self, user: User, grants: Sequence[str], *, actor: str) -> User:
        drop = set(self.normalise_grants(grants))
        kept = [g for g in user.grants if g not in drop]
        return await self.update(user, {"grants": kept}, actor=actor, action="user.revoke-grant")

    async def set_grants(self, user: User, grants: Sequence[object], *, actor: str) -> User:
        """Replace a user's grants (every one of his keys is re-checked at once)."""
        normalised = self.normalise_grants(grants)
        return await self.update(
            user, {"grants": list(normalised)}, actor=actor, action="user.set-grants"
        )

    async def set_networks(
        self, user: User, networks: Sequence[object] | None, *, actor: str
    ) -> User:
        """Set (None: clear) the networks every key of the user may be used from. Keys with a
        list of their own keep it, and both lists apply (gateway/policy/networks.py)."""
        try:
            parsed = None if networks is None else list(parse_networks(networks))
        except NetworkError as exc:
            raise Invalid([("allowedNetworks", str(exc))]) from None
        return await self.update(
            user, {"allowed_networks": parsed}, actor=actor, action="user.set-networks"
        )

    async def set_password(self, user: User, password: str, *, actor: str) -> User:
        """Changing a password does not revoke the user's keys (as in Haplo)."""
        if user.is_service:
            raise Invalid([("password", "service users cannot log in, so they have no password")])
        problem = password_problem(password)
        if problem:
            raise Invalid([("password", problem)])
        return await self.update(
            user,
            {"password_hash": await hash_password(password)},
            actor=actor,
            action="user.password",
        )

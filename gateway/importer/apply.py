"""Reading what Keygate already holds, and writing an import plan through the store.

Every write goes through the store with its audit record in the same transaction, one row
at a time: an import that stops half way (database gone) leaves whole rows, and running it
again finishes it, since what exists is found and not written twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.importer.plan import LEGACY_FORMAT, Existing, Plan
from gateway.importer.source import Source
from gateway.keys import format as keyformat
from gateway.keys.hashing import KeyHasher
from gateway.store import base as store_base
from gateway.store.base import ApiKey, Audit, Resource, Store, User
from gateway.users import UserService, new_user_id

ACTOR = "cli"
SOURCE = "btcpay"

Invalidate = Callable[[list[bytes]], Awaitable[None]]


@dataclass(slots=True)
class Written:
    """What an import wrote (the Keygate ids of new keys, for the summary)."""

    users_created: list[str] = field(default_factory=list)
    users_granted: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # source row -> Keygate key id
    raced: list[str] = field(default_factory=list)  # rows another import wrote meanwhile


async def read_existing(
    store: Store,
    source: Source,
    hasher: KeyHasher,
    store_type: str | None,
    previous: Sequence[KeyHasher] = (),
) -> Existing:
    """Keygate's users, registered stores, and the source's keys Keygate already holds (by
    their hash under the current secret or, not yet re-hashed, a previous one)."""
    users = {u.email.lower(): u for u in await store.list_users()}
    by_id = {u.id: u for u in users.values()}
    keys: dict[bytes, ApiKey] = {}
    for key in source.keys:
        if not keyformat.is_legacy(key.text):
            continue
        digest = hasher.digest(key.text)
        for one in (hasher, *previous):
            found = await store.find_key_by_hash(one.digest(key.text))
            if found is not None:
                keys[digest] = found.key
                break
    stores = {r.id: r.name for r in await store.list_resources(store_type)} if store_type else {}
    return Existing(users, keys, by_id, stores)


async def apply_plan(
    plan: Plan,
    *,
    store: Store,
    users: UserService,
    hasher: KeyHasher,
    prefix: str,
    store_type: str | None,
    invalidate: Invalidate,
) -> Written:
    written = Written()
    owners: dict[str, str] = {}  # lower-cased email -> Keygate user id
    for planned in plan.users:
        if planned.existing is None:
            user = await _create_user(store, planned.email, planned.add_grants, planned.source_id)
            written.users_created.append(user.email)
        else:
            user = planned.existing
            if planned.add_grants:
                user = await users.grant(user, planned.add_grants, actor=ACTOR)
                written.users_granted.append(user.email)
        owners[planned.email.lower()] = user.id
    for store_id, name in plan.stores.items():
        assert store_type is not None
        await store.put_resource(
            Resource(store_type, store_id, name),
            Audit(
                ACTOR,
                "resource.put",
                f"resource:{store_type}/{store_id}",
                {"name": name, "source": SOURCE},
            ),
        )
        written.stores.append(store_id)
    digests = []
    for key in plan.keys:
        record = ApiKey(
            id=keyformat.new_key_id(prefix),
            key_hash=hasher.digest(key.text),
            secret_fingerprint=hasher.fingerprint,
            user_id=owners[key.email.lower()],
            label=key.label,
            permissions=key.permissions,
            path_rule=None,
            status="active",
            created_at=datetime.now(UTC),
            application_identifier=key.application_identifier,
            redirect_origin=key.redirect_origin,
            legacy=LEGACY_FORMAT,
        )
        detail = {
            "owner": record.user_id,
            "label": record.label,
            "permissions": list(record.permissions),
            "application": record.application_identifier,
            "legacy": LEGACY_FORMAT,
            "source": SOURCE,
        }
        try:
            await store.create_key(record, Audit(ACTOR, "key.import", f"key:{record.id}", detail))
        except store_base.Conflict:
            written.raced.append(key.row)  # another import wrote it since we looked
            continue
        written.keys[key.row] = record.id
        digests.append(record.key_hash)
    if digests:
        # A client may have tried the key before it was imported: forget that it was unknown.
        await invalidate(digests)
    if written.users_created or written.users_granted or written.stores or written.keys:
        await store.add_audit(
            Audit(
                ACTOR,
                "import.btcpay",
                "import:btcpay",
                {
                    "keys": len(written.keys),
                    "usersCreated": len(written.users_created),
                    "usersGranted": len(written.users_granted),
                    "stores": len(written.stores),
                    "skipped": len(plan.skipped),
                },
            )
        )
    return written


async def _create_user(store: Store, email: str, grants: tuple[str, ...], source_id: str) -> User:
    """A person with no password (BTCPay's password hashes are not ours): he signs in once
    an operator sets one with `gateway users password`."""
    user = User(
        id=new_user_id(),
        email=email,
        password_hash=None,
        is_admin=False,
        is_service=False,
        disabled=False,
        grants=grants,
        created_at=datetime.now(UTC),
    )
    detail = {
        "email": email,
        "admin": False,
        "service": False,
        "grants": list(grants),
        "source": SOURCE,
        "btcpayUserId": source_id,
    }
    return await store.create_user(user, Audit(ACTOR, "user.create", f"user:{user.id}", detail))

"""What an import writes, and what it skips and why. Pure; no I/O.

The rules (the README's "Migrating from BTCPay Server" says the same):

- A key is imported as it is, in BTCPay's format (40 hex characters), hashed like ours,
  with the permissions the loaded catalog knows; each unknown one is dropped with a reason.
  A key that is malformed, repeated, or whose user is unknown, has no usable email or is
  disabled in BTCPay, is skipped with a reason. A key already in Keygate is not written
  again (re-runs are idempotent).
- A user is created (by email; no password: `gateway users password` sets one) or found,
  and given the grants his imported keys need, within what BTCPay let him do: on each store
  the permissions of his store role there, `btcpay.server.*` if he is a server admin, and
  his own `btcpay.user.*`. An unscoped store permission on a key ("all my stores" in
  BTCPay) becomes one grant per store where his role covers it; the key keeps it unscoped.
  A key permission BTCPay would not have honoured either stays on the key, inert, and is
  noted.
- Stores named in the grants are registered as resources (for the pages' store pickers)
  unless a resource of that id exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.importer.source import Source, SourceKey, SourceUser
from gateway.keys import format as keyformat
from gateway.keys.manage import MAX_LABEL
from gateway.policy.evaluate import owner_grants
from gateway.policy.model import UNRESTRICTED, Catalog, Perm
from gateway.store.base import ApiKey, User
from gateway.users import EMAIL_RE

LEGACY_FORMAT = "btcpay"
MAX_IDENTIFIER = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_AUTHORITY = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")
_SERVER, _USER = "btcpay.server.", "btcpay.user."


@dataclass(frozen=True, slots=True)
class PlannedUser:
    email: str
    source_id: str
    existing: User | None  # None: to be created
    add_grants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PlannedKey:
    row: str
    text: str = field(repr=False)
    email: str
    label: str
    permissions: tuple[str, ...]
    application_identifier: str | None
    redirect_origin: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One line of the summary about a row: skipped, already imported, or a note."""

    row: str
    reason: str
    email: str | None = None
    label: str | None = None
    key_id: str | None = None  # Keygate's id, for keys already imported


@dataclass(slots=True)
class Plan:
    users: list[PlannedUser] = field(default_factory=list)
    stores: dict[str, str] = field(default_factory=dict)  # id -> name, to register
    keys: list[PlannedKey] = field(default_factory=list)
    already: list[Outcome] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)
    dropped: list[Outcome] = field(default_factory=list)  # permissions left out of a key
    notes: list[Outcome] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Existing:
    """What Keygate already holds, read before planning."""

    users: Mapping[str, User]  # by lower-cased email
    keys: Mapping[bytes, ApiKey]  # by hash, for the source's keys
    users_by_id: Mapping[str, User]  # owners of `keys`
    stores: Mapping[str, str]  # registered store resources: id -> name


def plan_import(
    source: Source,
    catalog: Catalog,
    existing: Existing,
    digest: Callable[[str], bytes],
    store_type: str | None,
) -> Plan:
    plan = Plan()
    plan.skipped.extend(Outcome(p.row, p.reason, p.email, p.label) for p in source.problems)
    seen: dict[str, str] = {}  # key text -> row of its first occurrence
    needs: dict[str, dict[str, None]] = {}  # email -> grants the keys need
    owners: dict[str, SourceUser] = {}
    for key in source.keys:
        user = source.users.get(key.user_id or "")
        email = user.email.strip() if user is not None and user.email else None
        reason = _key_problem(key, user, email, seen)
        if reason is not None:
            who = email or (f"user {key.user_id[:80]}" if key.user_id else None)
            plan.skipped.append(Outcome(key.row, reason, who, key.label))
            continue
        assert user is not None
        assert email is not None
        seen[key.text] = key.row
        found = existing.keys.get(digest(key.text))
        if found is not None:
            holder = existing.users_by_id.get(found.user_id)
            if holder is not None and holder.email.lower() == email.lower():
                plan.already.append(
                    Outcome(key.row, "already imported", email, found.label, found.id)
                )
            else:
                plan.skipped.append(
                    Outcome(
                        key.row,
                        f"already in Keygate as {found.id}, for another user",
                        email,
                        key.label,
                    )
                )
            continue
        perms = _permissions(key, catalog, plan)
        rights = _rights(source, user, catalog, store_type)
        wanted = needs.setdefault(email.lower(), {})
        owners.setdefault(email.lower(), user)
        for perm in perms:
            grants = _grants_for(perm, rights, source, user, catalog, store_type)
            if not grants:
                plan.notes.append(
                    Outcome(
                        key.row,
                        f"{perm}: the user did not hold it in BTCPay "
                        "either; kept on the key, which cannot use it",
                        email,
                        key.label,
                    )
                )
            wanted.update((str(g), None) for g in grants)
        plan.keys.append(_planned(key, email, tuple(str(p) for p in perms), plan))
    for lowered, wanted in needs.items():
        user = owners[lowered]
        email = (user.email or "").strip()
        for member in source.memberships_of(user.id):
            if member.permissions is None:
                plan.notes.append(
                    Outcome(
                        f"store {member.store_id}",
                        f"unknown store role {member.role[:80]!r}: none of its permissions "
                        "are granted",
                        email,
                    )
                )
        current = existing.users.get(lowered)
        held = owner_grants(catalog, current.grants, is_admin=current.is_admin) if current else ()
        add = tuple(g for g in wanted if not catalog.satisfies(held, catalog.parse(g)))
        plan.users.append(PlannedUser(email, user.id, current, add))
        if current is not None and current.disabled:
            plan.notes.append(
                Outcome(
                    "-",
                    "the user is disabled in Keygate: his keys are "
                    "imported but refused until he is enabled",
                    email,
                )
            )
        for grant in add:
            store = catalog.parse(grant).resource
            if store is not None and store not in existing.stores:
                plan.stores[store] = source.store_names.get(store, store)
    return plan


def _key_problem(
    key: SourceKey, user: SourceUser | None, email: str | None, seen: Mapping[str, str]
) -> str | None:
    """Why a key row cannot be imported, or None. Never quotes the key."""
    if len(key.text) != keyformat.LEGACY_LEN:
        return (
            f"the key is {len(key.text)} characters long; a BTCPay key is "
            f"{keyformat.LEGACY_LEN} hex characters"
        )
    if not keyformat.is_legacy(key.text):
        return "the key is not hexadecimal"
    if key.text in seen:
        return f"the same key as {seen[key.text]}"
    if key.user_id is None:
        return "the key has no userId"
    if user is None:
        return f"unknown user {key.user_id[:80]!r}"
    if email is None or not EMAIL_RE.match(email):
        return f"the user {user.id[:80]!r} has no usable email"
    if user.disabled:
        return "the user is disabled in BTCPay (his keys do not work there)"
    return None


def _permissions(key: SourceKey, catalog: Catalog, plan: Plan) -> tuple[Perm, ...]:
    out: dict[Perm, None] = {}
    for raw in key.permissions:
        if not isinstance(raw, str):
            plan.dropped.append(Outcome(key.row, f"{str(raw)[:80]}: not a string"))
            continue
        try:
            out.setdefault(catalog.parse(raw), None)
        except ValueError as exc:
            plan.dropped.append(Outcome(key.row, f"{raw[:120]}: {exc}", label=key.label))
    return tuple(out)


def _rights(
    source: Source, user: SourceUser, catalog: Catalog, store_type: str | None
) -> tuple[Perm, ...]:
    """What BTCPay let this user do: his store roles, server rights, his own account."""
    out: dict[Perm, None] = {}
    for member in source.memberships_of(user.id):
        for raw in member.permissions or ():  # an unknown role gives nothing (noted)
            try:
                perm = catalog.parse(raw)
            except ValueError:
                continue
            if store_type is not None and catalog.permissions[perm.name].scope == store_type:
                out.setdefault(Perm(perm.name, member.store_id), None)
    for name in catalog.permissions:
        if name.startswith(_USER) or (user.is_admin and name.startswith(_SERVER)):
            out.setdefault(Perm(name), None)
    return tuple(out)


def _grants_for(
    perm: Perm,
    rights: tuple[Perm, ...],
    source: Source,
    user: SourceUser,
    catalog: Catalog,
    store_type: str | None,
) -> tuple[Perm, ...]:
    """The grants a key permission needs to work as it did in BTCPay (empty: it did not)."""
    if perm.name == UNRESTRICTED:
        return rights
    scope = catalog.permissions[perm.name].scope
    if perm.resource is None and scope is not None and scope == store_type:
        stores = dict.fromkeys(m.store_id for m in source.memberships_of(user.id))
        return tuple(
            Perm(perm.name, s) for s in stores if catalog.satisfies(rights, Perm(perm.name, s))
        )
    return (perm,) if catalog.satisfies(rights, perm) else ()


def _planned(key: SourceKey, email: str, perms: tuple[str, ...], plan: Plan) -> PlannedKey:
    label = _CONTROL.sub(" ", key.label).strip()
    if len(label) > MAX_LABEL:
        label = label[:MAX_LABEL].rstrip()
    if label != key.label.strip():
        plan.notes.append(Outcome(key.row, "label shortened or cleaned", email, label))
    app = key.application_identifier
    if app is not None and (len(app) > MAX_IDENTIFIER or _CONTROL.search(app)):
        plan.notes.append(
            Outcome(
                key.row,
                "application identifier left out (too long or control characters)",
                email,
                label,
            )
        )
        app = None
    authority = key.application_authority
    origin = None
    if authority and _AUTHORITY.fullmatch(authority):
        # BTCPay keeps only the redirect's host[:port]; its authorize flow requires https.
        origin = f"https://{authority.lower()}"
    return PlannedKey(key.row, key.text, email, label, perms, app, origin)

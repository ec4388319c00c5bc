"""Turning domain values into what templates show. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.keys import idle
from gateway.keys.format import mask
from gateway.keys.usage import PermissionUse
from gateway.policy.model import Catalog, Perm
from gateway.store.base import ApiKey, Resource


@dataclass(frozen=True, slots=True)
class PermView:
    text: str  # the permission string, as sent to applications
    name: str
    title: str
    description: str
    resource: str | None
    resource_label: str | None  # "store Main shop (S1)"


@dataclass(frozen=True, slots=True)
class KeyView:
    id: str
    label: str
    masked: str
    permissions: tuple[PermView, ...]
    path_rule: str | None
    status: str
    created_at: str
    last_used_at: str
    expires_at: str
    expired: bool
    application: str | None  # "gozo at https://gozo.example"
    legacy: str | None = None  # "BTCPay Server" for a key imported in BTCPay's format
    replaced_by: str | None = None  # masked id of the key that replaced it (rotation)
    networks: str | None = None  # the IP allow-list, space-separated; None: any address
    leaked: str | None = None  # "2026-12-07 10:00 UTC (github: commit)" when reported leaked
    idle_disable_at: str | None = None  # when it is disabled if left unused (idle_key_days)
    # Least privilege: (permission, last used) per permission, and those granted but unused.
    usage: tuple[tuple[str, str], ...] = ()
    unused: tuple[str, ...] = ()


def when(value: datetime | None) -> str:
    """A timestamp for people: `2026-11-22 20:39 UTC`; a dash for none."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration_text(seconds: float) -> str:
    """When something happens after a delay, for people: `at once`, `after 24 hours`."""
    whole = int(seconds)
    if whole <= 0:
        return "at once"
    count, unit = whole, "second"
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if whole % size == 0:
            count, unit = whole // size, name
            break
    return f"after {count} {unit}{'' if count == 1 else 's'}"


def resource_names(resources: Iterable[Resource]) -> dict[tuple[str, str], str]:
    return {(r.type, r.id): r.name for r in resources}


def describe(
    catalog: Catalog, perm: Perm, names: Mapping[tuple[str, str], str] | None = None
) -> PermView:
    definition = catalog.permissions.get(perm.name)
    title = definition.title if definition and definition.title else perm.name
    description = definition.description if definition else ""
    label = None
    if perm.resource is not None:
        kind = definition.scope if definition and definition.scope else "resource"
        type_title = catalog.resource_types.get(kind, kind).lower()
        name = (names or {}).get((kind, perm.resource))
        label = (
            f"{type_title} {name} ({perm.resource})" if name else f"{type_title} {perm.resource}"
        )
    return PermView(str(perm), perm.name, title, description, perm.resource, label)


def describe_texts(
    catalog: Catalog, texts: Sequence[str], names: Mapping[tuple[str, str], str]
) -> tuple[PermView, ...]:
    out = []
    for text in texts:
        try:
            perm = catalog.parse(text)
        except ValueError:
            out.append(PermView(text, text, text, "no longer in the catalog", None, None))
            continue
        out.append(describe(catalog, perm, names))
    return tuple(out)


# How the pages name the format of an imported key (`ApiKey.legacy`).
LEGACY_NAMES = {"btcpay": "BTCPay Server"}


def key_view(
    key: ApiKey,
    catalog: Catalog,
    names: Mapping[tuple[str, str], str],
    *,
    now: datetime,
    uses: Sequence[PermissionUse] = (),
    idle_days: float = 0.0,
) -> KeyView:
    application = None
    if key.application_identifier or key.redirect_origin:
        application = " at ".join(p for p in (key.application_identifier, key.redirect_origin) if p)
    return KeyView(
        id=key.id,
        label=key.label or "(no label)",
        masked=mask(key.id),
        permissions=describe_texts(catalog, key.permissions, names),
        path_rule=key.path_rule,
        status=key.status,
        created_at=when(key.created_at),
        last_used_at=when(key.last_used_at),
        expires_at=when(key.expires_at),
        expired=key.expires_at is not None and key.expires_at <= now,
        application=application,
        legacy=LEGACY_NAMES.get(key.legacy, key.legacy) if key.legacy else None,
        replaced_by=mask(key.replaced_by) if key.replaced_by else None,
        networks=" ".join(key.allowed_networks) if key.allowed_networks is not None else None,
        leaked=f"{when(key.leaked_at)} ({key.leak_source})" if key.leaked_at else None,
        idle_disable_at=when(at) if (at := idle.disable_at(key, idle_days)) else None,
        usage=tuple((u.permission, when(u.last_used_at)) for u in uses),
        unused=tuple(u.permission for u in uses if u.unused),
    )

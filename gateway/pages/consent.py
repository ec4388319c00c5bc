"""What the consent page offers and what a consent grants. Pure; no I/O.

`consent_view` describes the page: each requested permission and whether the user holds it,
under `strict=false` the other permissions he could add, and under `selectiveStores=true`
the stores he may pick (`picker_stores`). `decide` turns a consent POST into the permissions
of the new key.

An unscoped store permission means "every store I hold it on" (BTCPay's meaning; the catalog
marks the resource types that behave so, see `Catalog.reaches_held`): a user who holds it on
some stores only may grant it, and the page names those stores.

Under `strict=true` the granted permissions come from the (signed) request alone: the form's
permission fields are not even read, so a tampered form cannot add anything. Under
`strict=false` the form's choices count, but each must be something the user holds. The
key service checks the minting rules once more when the key is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.pages.authorize_request import AuthorizeRequest
from gateway.policy.model import UNRESTRICTED, Catalog, Perm
from gateway.store.base import ApiKey, Resource

# The resource type that `selectiveStores` picks (BTCPay's stores).
STORE = "store"


@dataclass(frozen=True, slots=True)
class Offer:
    """One permission line on the consent page."""

    perm: Perm
    requested: bool
    available: bool  # the user holds it, so it can be granted
    reach: tuple[str, ...] = ()  # unscoped, held on these resources only (ids)


@dataclass(frozen=True, slots=True)
class StoreChoice:
    id: str
    name: str
    available: bool  # the user holds every store permission asked for, on this store


@dataclass(frozen=True, slots=True)
class ConsentView:
    requested: tuple[Offer, ...]
    extra: tuple[Offer, ...]  # strict=false only: other permissions the user may add
    blocked: bool  # strict and a requested permission is unavailable: cannot authorize
    selective: tuple[Perm, ...]  # requested permissions that apply to the chosen stores
    stores: tuple[StoreChoice, ...]

    @property
    def unavailable(self) -> tuple[Perm, ...]:
        return tuple(o.perm for o in self.requested if not o.available)


@dataclass(frozen=True, slots=True)
class Granted:
    permissions: tuple[Perm, ...]


@dataclass(frozen=True, slots=True)
class ConsentRefused:
    message: str


def _selective(req: AuthorizeRequest, perms: Iterable[Perm], catalog: Catalog) -> list[Perm]:
    """The permissions the store picker applies to: unscoped and scopable to a store."""
    if not req.selective_stores:
        return []
    return [
        p
        for p in perms
        if p.resource is None
        and p.name in catalog.permissions
        and catalog.permissions[p.name].scope == STORE
    ]


def picker_stores(
    held: Sequence[Perm], catalog: Catalog, registered: Sequence[Resource]
) -> list[Resource]:
    """The stores the store picker lists: those the user holds store permissions on, named
    from the registered resources where they exist and by id where not. A user holding a
    store permission unscoped (or `unrestricted`) may pick any registered store."""
    names = {r.id: r.name for r in registered if r.type == STORE}
    everywhere = any(
        h.resource is None and (h.name == UNRESTRICTED or _scope(catalog, h.name) == STORE)
        for h in held
    )
    ids: dict[str, None] = dict.fromkeys(names) if everywhere else {}
    for h in held:
        if h.resource is not None and _scope(catalog, h.name) == STORE:
            ids.setdefault(h.resource, None)
    return [Resource(STORE, i, names.get(i, i)) for i in ids]


def _scope(catalog: Catalog, name: str) -> str | None:
    definition = catalog.permissions.get(name)
    return definition.scope if definition else None


def _reach(held: Sequence[Perm], catalog: Catalog, p: Perm) -> tuple[str, ...]:
    """The resources an unscoped "held" permission reaches when not held unscoped."""
    if p.resource is not None or not catalog.reaches_held(p.name):
        return ()
    if catalog.satisfies(held, p):
        return ()
    return catalog.held_on(held, p.name)


def consent_view(
    req: AuthorizeRequest, held: Sequence[Perm], catalog: Catalog, stores: Sequence[Resource]
) -> ConsentView:
    selective = _selective(req, req.permissions, catalog)

    def offer(p: Perm, requested: bool) -> Offer:
        reach = _reach(held, catalog, p)
        available = catalog.satisfies(held, p) or bool(reach)
        # A store permission the user holds on some stores only can still be granted on those.
        if not available and p in selective:
            available = any(catalog.satisfies(held, Perm(p.name, s.id)) for s in stores)
        return Offer(p, requested=requested, available=available, reach=reach)

    requested = tuple(offer(p, True) for p in req.permissions)
    extra: list[Offer] = []
    if not req.strict:
        asked = set(req.permissions)
        candidates = [Perm(name) for name in catalog.permissions]
        candidates += [p for p in held if p.resource is not None]
        for p in candidates:
            if p in asked:
                continue
            line = offer(p, False)
            if not line.available:
                continue
            if p.resource is not None and catalog.satisfies(extra_perms(extra), p):
                continue  # already offered unscoped
            extra.append(line)
    choices: tuple[StoreChoice, ...] = ()
    if selective:
        choices = tuple(
            StoreChoice(
                s.id,
                s.name,
                all(catalog.satisfies(held, Perm(p.name, s.id)) for p in selective),
            )
            for s in stores
        )
    blocked = req.strict and any(not o.available for o in requested)
    return ConsentView(requested, tuple(extra), blocked, tuple(selective), choices)


def extra_perms(offers: Iterable[Offer]) -> list[Perm]:
    return [o.perm for o in offers]


def decide(
    req: AuthorizeRequest,
    held: Sequence[Perm],
    catalog: Catalog,
    stores: Sequence[Resource],
    *,
    chosen_permissions: Sequence[str],
    chosen_stores: Sequence[str],
) -> Granted | ConsentRefused:
    """The permissions of the key this consent creates, or why it cannot be given."""
    if req.strict:
        base = list(req.permissions)  # never the form: see the module docstring
    else:
        base = []
        for raw in chosen_permissions:
            try:
                perm = catalog.parse(raw)
            except ValueError as exc:
                return ConsentRefused(str(exc))
            if perm not in base:
                base.append(perm)
    selective = _selective(req, base, catalog)
    missing = catalog.beyond(held, [p for p in base if p not in selective])
    if missing:
        return ConsentRefused(
            f"you do not hold {', '.join(map(str, missing))}, so you cannot grant it"
        )
    if not selective:
        return Granted(tuple(base))
    known = {s.id for s in stores}
    picked = [s for s in dict.fromkeys(chosen_stores) if s in known]
    if not picked:
        return ConsentRefused("choose at least one store for the store permissions")
    granted = [p for p in base if p not in selective]
    for store in picked:
        for p in selective:
            scoped = Perm(p.name, store)
            if not catalog.satisfies(held, scoped):
                return ConsentRefused(f"you do not hold {scoped}, so you cannot grant it")
            granted.append(scoped)
    return Granted(tuple(dict.fromkeys(granted)))


def replaceable(
    keys: Iterable[ApiKey], req: AuthorizeRequest, catalog: Catalog, now: datetime
) -> ApiKey | None:
    """The user's key that this request may replace: same application identifier, same
    redirect origin (a different origin never matches), active, unexpired, not already replaced
    (a key in its grace period), and covering every requested permission. The newest such
    key, or None.

    Under `selectiveStores=true` a store permission asked for unscoped is covered by a key
    holding it on any store: the key was made from an earlier pick of stores."""
    if req.application_identifier is None or req.redirect is None:
        return None
    selective = set(_selective(req, req.permissions, catalog))
    found = None
    for key in keys:
        if (
            key.application_identifier != req.application_identifier
            or key.redirect_origin != req.redirect.origin
            or key.status != "active"
            or key.replaced_by is not None
            or (key.expires_at is not None and key.expires_at <= now)
        ):
            continue
        perms = []
        for raw in key.permissions:
            try:
                perms.append(catalog.parse(raw))
            except ValueError:
                continue  # a permission the catalog no longer knows covers nothing
        uncovered = catalog.covers(perms, req.permissions)
        if any(p not in selective or not catalog.held_on(perms, p.name) for p in uncovered):
            continue
        if found is None or key.created_at >= found.created_at:
            found = key
    return found

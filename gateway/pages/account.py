"""Account → API keys: list, create (shown once), disable/enable, delete with confirmation.

Every rule about what a key may hold is `KeyService`'s: the page only collects the choices
and shows its errors. A new key appears once, in the response to the POST that made it (never
in a URL, never cached); afterwards only its masked form is shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aiohttp import web

from gateway import sessions
from gateway.errors import BadRequest, Forbidden, Invalid
from gateway.keys.usage import report
from gateway.limits.quota import QuotaError, check_key_limits, looser
from gateway.pages.consent import STORE, picker_stores
from gateway.pages.login import login_url
from gateway.pages.render import first, read_form, render, see_other
from gateway.pages.views import describe, key_view, resource_names
from gateway.policy.model import UNRESTRICTED, Catalog, Perm
from gateway.services import Services
from gateway.state import SERVICES
from gateway.store.base import ApiKey, Resource, User

KEYS_PATH = "/account/api-keys"
NEW_PATH = "/account/api-keys/new"


async def user_or_login(request: web.Request) -> User | web.Response:
    session = await sessions.load_session(request)
    if session.user is None:
        # After logging in, a GET comes back to the same page; a POST to the key list.
        return see_other(login_url(request.path_qs if request.method == "GET" else KEYS_PATH))
    return session.user


async def csrf_or_fail(request: web.Request, form: Mapping[str, list[str]]) -> None:
    if not await sessions.csrf_valid(request, first(form, "csrf")):
        raise Forbidden(
            "This form had expired or did not come from this site. Go back, reload the page "
            "and try again.",
            code="csrf-failed",
        )


async def _all_resources(services: Services) -> list[Resource]:
    return await services.store.list_resources()


async def _pickable(services: Services, held: Sequence[Perm]) -> list[Resource]:
    """The resources the create form offers: stores as the consent page's picker lists them
    (the user's, named where registered), other types as registered."""
    registered = await _all_resources(services)
    stores = picker_stores(held, services.policy.catalog, registered)
    return [r for r in registered if r.type != STORE] + stores


async def list_keys(request: web.Request) -> web.StreamResponse:
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    services = request.app[SERVICES]
    names = resource_names(await _all_resources(services))
    now = datetime.now(UTC)
    settings = services.settings
    owned = await services.keys.list_for(user.id)
    used = await services.store.permission_use([k.id for k in owned])
    keys = [
        key_view(
            k,
            services.policy.catalog,
            names,
            now=now,
            uses=report(k, used[k.id], settings.unused_permission_days, now),
            idle_days=settings.idle_key_days,
        )
        for k in owned
    ]
    quotas = {}
    for key in keys:
        quota = await services.quota.get(key.id)
        if quota is not None:
            quotas[key.id] = {
                "limits": [str(services.policy.limits.get(n, n)) for n in quota.limits],
                "names": quota.limits,
                "credits": await services.quota.balance(quota),
                "refill": quota.refill,
            }
    notice = {
        "disabled": "Key disabled.",
        "active": "Key enabled.",
        "deleted": "Key deleted.",
        "networks": "Networks saved.",
    }
    return await render(
        request,
        "keys.html",
        {
            "keys": keys,
            "quotas": quotas,
            "notice": notice.get(request.query.get("done", "")),
            "unused_days": f"{settings.unused_permission_days:g}",
        },
    )


def _choices(catalog: Catalog, held: tuple[Perm, ...], resources: list[Resource]) -> Any:
    """The catalog as the create form shows it: every permission, marked available or not,
    and for each resource type that permissions can be scoped to, its resources."""
    permissions = []
    for name, definition in catalog.permissions.items():
        available = catalog.satisfies(held, Perm(name)) or any(
            h.resource is not None and catalog.satisfies([h], Perm(name, h.resource)) for h in held
        )
        permissions.append(
            {
                "view": describe(catalog, Perm(name)),
                "scope": definition.scope,
                "available": available,
                "unrestricted": name == UNRESTRICTED,
            }
        )
    types = sorted({d.scope for d in catalog.permissions.values() if d.scope})
    scopes = [
        {
            "type": t,
            "title": catalog.resource_types.get(t, t),
            "resources": [r for r in resources if r.type == t],
        }
        for t in types
    ]
    return {"permissions": permissions, "scopes": scopes}


async def new_key_form(request: web.Request) -> web.StreamResponse:
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    return await _form(request, user, {}, [])


async def _form(
    request: web.Request,
    user: User,
    form: Mapping[str, list[str]],
    errors: list[tuple[str, str]],
    status: int = 200,
) -> web.Response:
    services = request.app[SERVICES]
    catalog = services.policy.catalog
    held = sessions.principal_of(request, user).grants
    context = _choices(catalog, held, await _pickable(services, held))
    context.update(
        {
            "form": {
                "label": first(form, "label"),
                "path": first(form, "path"),
                "expires": first(form, "expires"),
                "networks": first(form, "networks"),
                "permission": set(form.get("permission", [])),
                "resource": set(form.get("resource", [])),
                "scope_mode": {k[6:]: first(form, k) for k in form if k.startswith("scope-")},
                "limit": first(form, "limit"),
            },
            "limit_choices": _limit_choices(services, user),
            "errors": errors,
            "owner_networks": " ".join(user.allowed_networks or ()),
        }
    )
    return await render(request, "key_new.html", context, status=status)


def _requested_permissions(
    catalog: Catalog, form: Mapping[str, list[str]], resources: list[Resource]
) -> list[str]:
    """The permission strings the form asks for, with "these stores only" applied."""
    known = {(r.type, r.id) for r in resources}
    out: list[str] = []
    errors: list[tuple[str, str]] = []
    for name in dict.fromkeys(form.get("permission", [])):
        definition = catalog.permissions.get(name)
        if definition is None:
            errors.append(("permissions", f"unknown permission {name!r}"))
            continue
        kind = definition.scope
        if kind is None or first(form, f"scope-{kind}", "all") != "selected":
            out.append(name)
            continue
        chosen = [
            value.partition(":")[2]
            for value in form.get("resource", [])
            if value.partition(":")[0] == kind and (kind, value.partition(":")[2]) in known
        ]
        if not chosen:
            title = catalog.resource_types.get(kind, kind).lower()
            errors.append(("resources", f"choose at least one {title}, or all of them"))
            continue
        out.extend(f"{name}:{rid}" for rid in chosen)
    if errors:
        raise Invalid(list(dict.fromkeys(errors)))
    return out


def _expiry(text: str) -> datetime | None:
    """A date from the form: the key works through that day (UTC)."""
    if not text.strip():
        return None
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise Invalid([("expires", "expected a date such as 2030-12-31")]) from None
    return datetime.combine(day + timedelta(days=1), time(0), UTC)


async def create_key(request: web.Request) -> web.StreamResponse:
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    form = await read_form(request)
    await csrf_or_fail(request, form)
    services = request.app[SERVICES]
    catalog = services.policy.catalog
    try:
        limits = _requested_limits(services, user, first(form, "limit"))
        held = sessions.principal_of(request, user).grants
        resources = await _pickable(services, held)
        permissions = _requested_permissions(catalog, form, resources)
        path = first(form, "path").strip()
        new = await services.keys.create(
            owner=user,
            creator=sessions.principal_of(request, user),
            label=first(form, "label"),
            permissions=permissions,
            path_rule=path or None,
            expires_at=_expiry(first(form, "expires")),
            allowed_networks=first(form, "networks").replace(",", " ").split() or None,
        )
    except Invalid as exc:
        return await _form(request, user, form, exc.errors, status=422)
    except Forbidden as exc:
        field = "networks" if exc.code == "network-not-allowed" else "permissions"
        return await _form(request, user, form, [(field, exc.message)], status=403)
    if limits:
        await services.quota.set(new.record.id, actor=f"user:{user.id}", limits=limits)
    names = resource_names(r for r in resources if r.name != r.id)  # registered names only
    return await render(
        request,
        "key_created.html",
        {
            "key_text": new.text,
            "key": key_view(new.record, catalog, names, now=datetime.now(UTC)),
            "application": None,
        },
        status=201,
    )


def _limit_choices(services: Services, user: User) -> list[tuple[str, str]]:
    """The limits the user's keys may carry (none unless the policy has key_limits)."""
    policy = services.policy
    ceiling = policy.key_limit_admin_max if user.is_admin else policy.key_limit_max
    if ceiling is None:
        return []
    return [
        (name, str(limit))
        for name, limit in policy.limits.items()
        if limit.scope == "key" and not looser(limit, ceiling)
    ]


def _requested_limits(services: Services, user: User, name: str) -> tuple[str, ...]:
    if not name:
        return ()
    policy = services.policy
    ceiling = policy.key_limit_admin_max if user.is_admin else policy.key_limit_max
    try:
        return check_key_limits([name], policy.limits, ceiling)
    except QuotaError as exc:
        raise Invalid([("limit", str(exc))]) from None


async def owned_key_or_404(request: web.Request, user: User) -> ApiKey:
    return await request.app[SERVICES].keys.get_owned(request.match_info["key_id"], user.id)


async def set_status(request: web.Request) -> web.StreamResponse:
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    form = await read_form(request)
    await csrf_or_fail(request, form)
    status = first(form, "status")
    if status not in ("active", "disabled"):
        raise BadRequest("status must be active or disabled")
    key = await owned_key_or_404(request, user)
    await request.app[SERVICES].keys.set_status(
        key, status, actor=sessions.principal_of(request, user)
    )
    return see_other(f"{KEYS_PATH}?done={status}")


async def confirm_delete(request: web.Request) -> web.StreamResponse:
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    services = request.app[SERVICES]
    key = await owned_key_or_404(request, user)
    names = resource_names(await _all_resources(services))
    view = key_view(key, services.policy.catalog, names, now=datetime.now(UTC))
    return await render(request, "key_delete.html", {"key": view})


async def delete_key(request: web.Request) -> web.StreamResponse:
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    form = await read_form(request)
    await csrf_or_fail(request, form)
    key = await owned_key_or_404(request, user)
    await request.app[SERVICES].keys.revoke(key, actor=sessions.principal_of(request, user))
    return see_other(f"{KEYS_PATH}?done=deleted")

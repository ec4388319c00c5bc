"""Account pages for the key lifecycle: rotate a key (the new one shown once), change the
networks a key may be used from, and Activity
(the audit entries about the person's account and keys, newest first, paged by cursor).

Rotation's rules are `KeyService.rotate`'s; the page collects the grace and shows the new
key together with when the old one stops.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web

from gateway import sessions
from gateway.api.lifecycle_schemas import audit_entry, audit_params
from gateway.errors import Invalid
from gateway.keys import rotation
from gateway.keys.format import mask
from gateway.pages.account import KEYS_PATH, csrf_or_fail, owned_key_or_404, user_or_login
from gateway.pages.render import first, read_form, render, see_other
from gateway.pages.views import key_view, resource_names, when
from gateway.state import SERVICES
from gateway.store.base import AuditQuery

ACTIVITY_PATH = "/account/activity"


async def rotate_key(request: web.Request) -> web.StreamResponse:
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    form = await read_form(request)
    await csrf_or_fail(request, form)
    try:
        grace = rotation.parse_grace(first(form, "grace", rotation.IMMEDIATE))
    except ValueError as exc:
        raise Invalid([("grace", str(exc))]) from None
    services = request.app[SERVICES]
    key = await owned_key_or_404(request, user)
    new = await services.keys.rotate(key, grace=grace, actor=sessions.principal_of(request, user))
    names = resource_names(await services.store.list_resources())
    return await render(
        request,
        "key_created.html",
        {
            "key_text": new.text,
            "key": key_view(new.record, services.policy.catalog, names, now=datetime.now(UTC)),
            "application": None,
            "previous_masked": mask(key.id),
            "previous_stops": when(new.previous.expires_at) if new.previous else None,
        },
        status=201,
    )


async def activity(request: web.Request) -> web.StreamResponse:
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    params = audit_params(request.query, ("key", "cursor", "limit"))
    services = request.app[SERVICES]
    records = await services.store.query_audit(
        AuditQuery(
            subject_user=user.id,
            target=f"key:{params.key}" if params.key else None,
            before=params.cursor,
            limit=params.limit + 1,
        )
    )
    entries = []
    for record in records[: params.limit]:
        entry = audit_entry(record)
        entries.append(
            {
                "id": entry["id"],
                "when": when(record.at),
                "action": entry["action"],
                "target": entry["target"],
                "actor": entry["actor"],
                "detail": [
                    (name, value if isinstance(value, str) else json.dumps(value))
                    for name, value in sorted(entry["detail"].items())
                ],
            }
        )
    next_url = None
    if len(records) > params.limit:
        query = {"cursor": str(records[params.limit - 1].id)}
        if params.key:
            query["key"] = params.key
        next_url = f"{ACTIVITY_PATH}?{urlencode(query)}"
    return await render(
        request,
        "activity.html",
        {"entries": entries, "next_url": next_url, "key_filter": params.key},
    )


async def set_networks(request: web.Request) -> web.StreamResponse:
    """The key list's "From" form: networks separated by commas or spaces; empty: any."""
    user = await user_or_login(request)
    if isinstance(user, web.Response):
        return user
    form = await read_form(request)
    await csrf_or_fail(request, form)
    key = await owned_key_or_404(request, user)
    networks = first(form, "networks").replace(",", " ").split() or None
    await request.app[SERVICES].keys.set_networks(
        key, networks, actor=sessions.principal_of(request, user)
    )
    return see_other(f"{KEYS_PATH}?done=networks")

"""Account → API keys, the lifecycle actions: rotate a key (the new one shown once).

Rotation's rules are `KeyService.rotate`'s; the page collects the grace and shows the new
key together with when the old one stops.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from gateway import sessions
from gateway.errors import Invalid
from gateway.keys import rotation
from gateway.keys.format import mask
from gateway.pages.account import csrf_or_fail, owned_key_or_404, user_or_login
from gateway.pages.render import first, read_form, render
from gateway.pages.views import key_view, resource_names, when
from gateway.state import SERVICES


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

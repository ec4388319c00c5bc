"""The audit log, readable (problem+json):

    GET /v1/admin/audit            every entry; filters actor, user (id or email), key, action,
                                   since, until; paged with `cursor` (needs `unrestricted`)
    GET /v1/apikeys/{id}/audit     one of the caller's keys' entries (`apikey:read` for a key)

Pages are newest first; a page asks for one entry more than it shows to know whether another
page follows (`nextCursor`).
"""

from __future__ import annotations

from aiohttp import web

from gateway.api import apikeys
from gateway.api.admin import BASE as ADMIN_BASE
from gateway.api.admin import admin_caller
from gateway.api.lifecycle_schemas import audit_page, audit_params
from gateway.api.render import add_routes, json_response
from gateway.state import SERVICES
from gateway.store.base import AuditQuery


async def admin_audit(request: web.Request) -> web.StreamResponse:
    await admin_caller(request)
    services = request.app[SERVICES]
    params = audit_params(request.query)
    subject = (await services.users.find(params.user)).id if params.user else None
    query = AuditQuery(
        actor=params.actor,
        subject_user=subject,
        target=f"key:{params.key}" if params.key else None,
        action=params.action,
        since=params.since,
        until=params.until,
        before=params.cursor,
        limit=params.limit + 1,
    )
    records = await services.store.query_audit(query)
    return json_response(audit_page(records, params.limit))


async def key_audit(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = await apikeys.caller(request, apikeys.READ)
    key = await apikeys.own_key(request, services, principal)
    params = audit_params(request.query, ("action", "since", "until", "cursor", "limit"))
    query = AuditQuery(
        target=f"key:{key.id}",
        subject_user=principal.user_id,
        action=params.action,
        since=params.since,
        until=params.until,
        before=params.cursor,
        limit=params.limit + 1,
    )
    records = await services.store.query_audit(query)
    return json_response(audit_page(records, params.limit))


def setup(app: web.Application) -> None:
    add_routes(app, "problem", ADMIN_BASE + "/audit", {"GET": admin_audit})
    add_routes(app, "problem", apikeys.BASE + "/{id}/audit", {"GET": key_audit})

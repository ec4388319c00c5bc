"""Buckaroo-style API-key management: `/v1/apikeys` (errors are problem+json).

* `POST /v1/apikeys` `{name, scopes, path?, expiresAt?, allowedNetworks?}` -> 201 with the
  key, shown this once.
* `GET /v1/apikeys?page=&pageSize=`, `GET /v1/apikeys/{id}`: masked, never the key.
* `PATCH /v1/apikeys/{id}` `{status?: Active|Disabled, name?, allowedNetworks?, limits?,
  credits?}` (allowedNetworks null: any address), `DELETE /v1/apikeys/{id}` (204). `limits`
  (also at creation) and `credits`: api/quotas.py.
* `POST /v1/apikeys/{id}/rotate` `{grace?, scopes?, narrow?}` -> 201 with the new key (shown
  once) and when the old one stops (`previous.expiresAt`); see keys/rotation.py. `narrow`
  keeps only the permissions used within `unused_permission_days`.
* `GET /v1/apikeys/{id}/usage`: last use per permission, and which are granted but unused.
* `PATCH /v1/apikeys/{id}/decrypt` `{password}`: the stored key, only where the deployment
  keeps retrievable keys, after a fresh password check, audited.

The caller acts on his own keys, with a key or a logged-in browser session. A key needs the
management scope: `apikey:read` to read, `apikey:manage` to change, `apikey:decrypt` to
decrypt (where the catalog defines them; otherwise `unrestricted`). A session is the person
himself, like the account pages, so it needs no scope (except `apikey:decrypt` where defined).
`{id}` is the public key id only: a whole key never belongs in a URL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from gateway.api import quotas
from gateway.api.auth import authenticate, reauthenticate, require, scope
from gateway.api.body import read_json
from gateway.api.lifecycle_schemas import rotate_request, rotated, usage_view
from gateway.api.render import add_routes, json_response
from gateway.api.schemas import (
    check_key_request,
    page_params,
    paged,
    password_request,
    v1_key,
    v1_key_patch,
    v1_key_request,
)
from gateway.errors import NotFound
from gateway.keys import format as keyformat
from gateway.keys.manage import actor_of
from gateway.keys.usage import PermissionUse, kept_permissions, report
from gateway.policy.evaluate import Principal
from gateway.services import Services
from gateway.state import SERVICES
from gateway.store.base import ApiKey

READ = "apikey:read"
MANAGE = "apikey:manage"
DECRYPT = "apikey:decrypt"
BASE = "/v1/apikeys"


async def caller(request: web.Request, need: str) -> Principal:
    principal = (await authenticate(request, passwords=False, sessions=True)).principal
    if principal.via == "key":
        catalog = request.app[SERVICES].policy.catalog
        require(principal, catalog, scope(catalog, need))
    return principal


async def own_key(request: web.Request, services: Services, principal: Principal) -> ApiKey:
    key_id = request.match_info["id"]
    settings = services.settings
    if not keyformat.looks_like_key_id(key_id, settings.key_prefix, settings.accepted_key_prefixes):
        raise NotFound(
            "API key not found (use the key's id, e.g. apk_0123456789abcdef)",
            code="apikey-not-found",
        )
    return await services.keys.get_owned(key_id, principal.user_id)


async def create_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = await caller(request, MANAGE)
    raw = await read_json(request)
    body = v1_key_request(raw)
    check_key_request(services.keys, body, label_path="name", perms_path="scopes")
    owner = await services.users.find(principal.user_id)
    limits = None
    if isinstance(raw, dict) and raw.get("limits"):  # checked before the key exists
        limits = quotas.key_limits(services, raw["limits"], owner_is_admin=owner.is_admin)
    new = await services.keys.create(
        owner=owner,
        creator=principal,
        label=body.label,
        permissions=body.permissions,
        path_rule=body.path,
        expires_at=body.expires_at,
        allowed_networks=body.networks,
    )
    if limits:
        await services.quota.set(new.record.id, actor=actor_of(principal), limits=limits)
    return json_response(
        await quotas.key_view(services, new.record, new.text),
        status=201,
        headers={"Location": f"{BASE}/{new.record.id}"},
    )


async def list_keys(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = await caller(request, READ)
    page = page_params(request.query)
    keys = await services.keys.list_for(principal.user_id)
    idle_days = services.settings.idle_key_days
    return json_response(paged(BASE, page, keys, lambda k: v1_key(k, idle_days=idle_days)))


async def get_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = await caller(request, READ)
    key = await own_key(request, services, principal)
    return json_response(await quotas.key_view(services, key))


async def update_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = await caller(request, MANAGE)
    key = await own_key(request, services, principal)
    raw = await read_json(request)
    patch = v1_key_patch(raw)
    if isinstance(raw, dict) and set(quotas.QUOTA_FIELDS) & set(raw):
        await quotas.apply(
            services,
            key,
            raw,
            actor=actor_of(principal),
            owner_is_admin=principal.is_admin,
            caller_is_admin=principal.is_admin,
        )
    if patch.name is not None:
        services.keys.check_label(patch.name, "name")
        key = await services.keys.rename(key, patch.name, actor=principal)
    if patch.networks_given:
        key = await services.keys.set_networks(key, patch.networks, actor=principal)
    if patch.status is not None and patch.status != key.status:
        key = await services.keys.set_status(key, patch.status, actor=principal)
    return json_response(await quotas.key_view(services, key))


async def delete_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = await caller(request, MANAGE)
    key = await own_key(request, services, principal)
    await services.keys.revoke(key, actor=principal)
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def decrypt_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    catalog = services.policy.catalog
    principal = (await authenticate(request, passwords=False, sessions=True)).principal
    if principal.via == "key":
        require(principal, catalog, scope(catalog, DECRYPT, scope(catalog, MANAGE)))
    elif DECRYPT in catalog:
        require(principal, catalog, DECRYPT)
    # Said before the key and the password are looked at: no password is worth sending here.
    services.keys.check_retrievable()
    key = await own_key(request, services, principal)
    password = password_request(await read_json(request))
    await reauthenticate(request, principal, password)
    text = await services.keys.reveal_audited(key, actor=principal)
    return json_response(v1_key(key, text))


async def rotate_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = await caller(request, MANAGE)
    key = await own_key(request, services, principal)
    body = rotate_request(await read_json(request))
    permissions = body.permissions
    if body.narrow:
        permissions = tuple(kept_permissions(await key_usage(services, key)))
    new = await services.keys.rotate(
        key, grace=body.grace, actor=principal, permissions=permissions
    )
    return json_response(rotated(new), status=201, headers={"Location": f"{BASE}/{new.record.id}"})


async def usage(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = await caller(request, READ)
    key = await own_key(request, services, principal)
    uses = await key_usage(services, key)
    return json_response(usage_view(key, uses, services.settings))


async def key_usage(services: Services, key: ApiKey) -> tuple[PermissionUse, ...]:
    """The key's permissions with their last use (least privilege)."""
    used = (await services.store.permission_use([key.id]))[key.id]
    days = services.settings.unused_permission_days
    return report(key, used, days, datetime.now(UTC))


def setup(app: web.Application) -> None:
    add_routes(app, "problem", BASE, {"POST": create_key, "GET": list_keys})
    add_routes(
        app,
        "problem",
        BASE + "/{id}",
        {"GET": get_key, "PATCH": update_key, "DELETE": delete_key},
    )
    add_routes(app, "problem", BASE + "/{id}/decrypt", {"PATCH": decrypt_key})
    add_routes(app, "problem", BASE + "/{id}/rotate", {"POST": rotate_key})
    add_routes(app, "problem", BASE + "/{id}/usage", {"GET": usage})

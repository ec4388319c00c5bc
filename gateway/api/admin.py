"""Administration API: users, resources, and any user's keys (`/v1/admin/...`, problem+json).

Every endpoint needs a caller holding `unrestricted` (administrators hold it): a key that
holds it, or an administrator's browser session. Every change goes through `UserService`,
`KeyService` or the store with an audit record, so the log names who did it.

    GET    /v1/admin/users                      list (?page=&pageSize=)
    POST   /v1/admin/users                      create (people or service users) -> 201
    GET    /v1/admin/users/{user}               by id or email
    PATCH  /v1/admin/users/{user}               {disabled?, grants?, allowedNetworks?}
                                                (grants and networks are replaced)
    PUT    /v1/admin/users/{user}/password      {password} (his keys stay valid, as in Haplo)
    GET    /v1/admin/users/{user}/keys          his keys, masked
    GET    /v1/admin/users/{user}/keys/{keyId}  one, with its quota (limits, credits)
    PATCH  /v1/admin/users/{user}/keys/{keyId}  {limits?, credits?} (api/quotas.py)
    DELETE /v1/admin/users/{user}/keys/{keyId}  revoke one -> 204
    GET    /v1/admin/resources                  list (?type=&page=&pageSize=)
    PUT    /v1/admin/resources/{type}/{id}      {name} create or rename
    DELETE /v1/admin/resources/{type}/{id}      -> 204
    POST   /v1/admin/policy/reload              re-read the policy files, in every worker
"""

from __future__ import annotations

from aiohttp import web

from gateway import reload
from gateway.api import quotas
from gateway.api.auth import authenticate, require
from gateway.api.body import read_json
from gateway.api.render import add_routes, json_response
from gateway.api.schemas import (
    page_params,
    paged,
    password_request,
    resource_ref,
    resource_request,
    resource_view,
    user_create_request,
    user_patch_request,
    user_view,
    v1_key,
)
from gateway.errors import Conflict, Invalid, NotFound
from gateway.keys.manage import actor_of
from gateway.policy.evaluate import Principal
from gateway.policy.loader import PolicyError
from gateway.policy.model import UNRESTRICTED
from gateway.state import SERVICES
from gateway.store.base import Audit, Resource

BASE = "/v1/admin"
NO_CONTENT_HEADERS = {"Cache-Control": "no-store"}


async def admin_caller(request: web.Request) -> Principal:
    principal = (await authenticate(request, passwords=False, sessions=True)).principal
    require(principal, request.app[SERVICES].policy.catalog, UNRESTRICTED)
    return principal


# -- users ----------------------------------------------------------------------------------


async def list_users(request: web.Request) -> web.StreamResponse:
    await admin_caller(request)
    page = page_params(request.query)
    users = await request.app[SERVICES].store.list_users()
    return json_response(paged(f"{BASE}/users", page, users, user_view))


async def create_user(request: web.Request) -> web.StreamResponse:
    principal = await admin_caller(request)
    body = user_create_request(await read_json(request))
    user = await request.app[SERVICES].users.create(
        email=body.email,
        password=body.password,
        actor=actor_of(principal),
        is_admin=body.admin,
        is_service=body.service,
        grants=body.grants,
    )
    return json_response(
        user_view(user), status=201, headers={"Location": f"{BASE}/users/{user.id}"}
    )


async def get_user(request: web.Request) -> web.StreamResponse:
    await admin_caller(request)
    user = await request.app[SERVICES].users.find(request.match_info["user"])
    return json_response(user_view(user))


async def update_user(request: web.Request) -> web.StreamResponse:
    principal = await admin_caller(request)
    users = request.app[SERVICES].users
    user = await users.find(request.match_info["user"])
    patch = user_patch_request(await read_json(request))
    actor = actor_of(principal)
    if patch.grants is not None:
        user = await users.set_grants(user, patch.grants, actor=actor)
    if patch.networks_given:
        user = await users.set_networks(user, patch.networks, actor=actor)
    if patch.disabled is not None and patch.disabled != user.disabled:
        if patch.disabled and user.id == principal.user_id:
            # Locking yourself out is never what an administrator means to do.
            raise Conflict("you cannot disable yourself", code="cannot-disable-self")
        user = await users.set_disabled(user, patch.disabled, actor=actor)
    return json_response(user_view(user))


async def set_password(request: web.Request) -> web.StreamResponse:
    principal = await admin_caller(request)
    users = request.app[SERVICES].users
    user = await users.find(request.match_info["user"])
    password = password_request(await read_json(request))
    user = await users.set_password(user, password, actor=actor_of(principal))
    return json_response(user_view(user))


async def list_user_keys(request: web.Request) -> web.StreamResponse:
    await admin_caller(request)
    services = request.app[SERVICES]
    user = await services.users.find(request.match_info["user"])
    page = page_params(request.query)
    keys = await services.keys.list_for(user.id)
    return json_response(paged(f"{BASE}/users/{user.id}/keys", page, keys, v1_key))


async def get_user_key(request: web.Request) -> web.StreamResponse:
    await admin_caller(request)
    services = request.app[SERVICES]
    user = await services.users.find(request.match_info["user"])
    key = await services.keys.get_owned(request.match_info["keyId"], user.id)
    return json_response(await quotas.key_view(services, key))


async def set_user_key_quota(request: web.Request) -> web.StreamResponse:
    principal = await admin_caller(request)
    services = request.app[SERVICES]
    user = await services.users.find(request.match_info["user"])
    key = await services.keys.get_owned(request.match_info["keyId"], user.id)
    body = await read_json(request)
    if not isinstance(body, dict) or not body or not set(body) <= set(quotas.QUOTA_FIELDS):
        raise Invalid([("body", "send limits and/or credits")])
    await quotas.apply(
        services,
        key,
        body,
        actor=actor_of(principal),
        owner_is_admin=user.is_admin,
        caller_is_admin=True,
    )
    return json_response(await quotas.key_view(services, key))


async def revoke_user_key(request: web.Request) -> web.StreamResponse:
    principal = await admin_caller(request)
    services = request.app[SERVICES]
    user = await services.users.find(request.match_info["user"])
    key = await services.keys.get_owned(request.match_info["keyId"], user.id)
    await services.keys.revoke(key, actor=principal)
    return web.Response(status=204, headers=NO_CONTENT_HEADERS)


# -- resources ------------------------------------------------------------------------------


async def list_resources(request: web.Request) -> web.StreamResponse:
    await admin_caller(request)
    services = request.app[SERVICES]
    type_ = request.query.get("type")
    if type_ is not None and not type_:
        raise Invalid([("type", "must not be empty")])
    page = page_params(request.query)
    resources = await services.store.list_resources(type_)
    return json_response(paged(f"{BASE}/resources", page, resources, resource_view))


async def put_resource(request: web.Request) -> web.StreamResponse:
    principal = await admin_caller(request)
    services = request.app[SERVICES]
    type_, id_ = resource_ref(
        request.match_info["type"],
        request.match_info["id"],
        services.policy.catalog.resource_types,
    )
    name = resource_request(await read_json(request))
    resource = Resource(type_, id_, name)
    await services.store.put_resource(
        resource,
        Audit(actor_of(principal), "resource.put", f"resource:{type_}/{id_}", {"name": name}),
    )
    return json_response(resource_view(resource))


async def delete_resource(request: web.Request) -> web.StreamResponse:
    principal = await admin_caller(request)
    services = request.app[SERVICES]
    type_, id_ = resource_ref(
        request.match_info["type"],
        request.match_info["id"],
        services.policy.catalog.resource_types,
    )
    deleted = await services.store.delete_resource(
        type_, id_, Audit(actor_of(principal), "resource.delete", f"resource:{type_}/{id_}")
    )
    if not deleted:
        raise NotFound("resource not found", code="resource-not-found")
    return web.Response(status=204, headers=NO_CONTENT_HEADERS)


# -- the policy -----------------------------------------------------------------------------


async def reload_policy(request: web.Request) -> web.StreamResponse:
    """Reload here first, so a broken policy is answered with its problem; then, under a
    master, every worker (this one included: an unchanged policy is not swapped again)."""
    await admin_caller(request)
    services = request.app[SERVICES]
    try:
        changed = await reload.reload_policy(services)
    except PolicyError as exc:
        raise Conflict(
            f"the policy files do not validate; the active policy stays: {exc}",
            code="policy-invalid",
        ) from None
    everywhere = reload.ask_master()
    return json_response(
        {
            "policy": reload.policy_status(services),
            "changed": changed,
            "workers": "all" if everywhere else "this",
        }
    )


def setup(app: web.Application) -> None:
    add_routes(app, "problem", f"{BASE}/users", {"GET": list_users, "POST": create_user})
    add_routes(app, "problem", f"{BASE}/users/{{user}}", {"GET": get_user, "PATCH": update_user})
    add_routes(app, "problem", f"{BASE}/users/{{user}}/password", {"PUT": set_password})
    add_routes(app, "problem", f"{BASE}/users/{{user}}/keys", {"GET": list_user_keys})
    add_routes(
        app,
        "problem",
        f"{BASE}/users/{{user}}/keys/{{keyId}}",
        {"GET": get_user_key, "PATCH": set_user_key_quota, "DELETE": revoke_user_key},
    )
    add_routes(app, "problem", f"{BASE}/resources", {"GET": list_resources})
    add_routes(
        app,
        "problem",
        f"{BASE}/resources/{{type}}/{{id}}",
        {"PUT": put_resource, "DELETE": delete_resource},
    )
    add_routes(app, "problem", f"{BASE}/policy/reload", {"POST": reload_policy})

"""BTCPay Greenfield-compatible API-key endpoints (`/api/v1/api-keys`, `/api/v1/users/...`).

Shapes follow `spec/btcpay-greenfield-api-keys.openapi.json`: bodies and answers are
`ApiKeyData` (`apiKey`, `label`, `permissions`), creation answers 200, errors are
`{code, message}` and 422 `[{path, message}]` (see `render`).

Who may do what:

* `POST /api/v1/api-keys`, `DELETE /api/v1/api-keys/{apikey}`: the caller's own keys, with
  Basic `email:password` or a key holding `unrestricted`.
* `GET|DELETE /api/v1/api-keys/current`: any valid key, on itself (even a path-restricted one).
* `/api/v1/users/{idOrEmail}/api-keys[/{apikey}]`: administrators, holding
  `btcpay.server.canmanageusers` where the BTCPay catalog is loaded (else `unrestricted`).

A new key never holds more than its creator or its owner (`KeyService.create`). `{apikey}`
may be the key itself (as BTCPay's clients send it) or its public id; another user's key is
"not found", never "forbidden", so its existence is not revealed. Revoking by `{apikey}`
answers an empty 200, as BTCPay does; revoking `current` answers its ApiKeyData (the spec's).
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.auth import authenticate, require, scope
from gateway.api.body import read_json
from gateway.api.render import add_routes, json_response
from gateway.api.schemas import api_key_data, check_key_request, greenfield_key_request
from gateway.errors import Forbidden, NotFound
from gateway.keys.manage import NewKey
from gateway.policy.evaluate import Principal
from gateway.policy.model import UNRESTRICTED, Catalog
from gateway.services import Services
from gateway.state import SERVICES

MANAGE_USERS = "btcpay.server.canmanageusers"


def _require_user_manager(principal: Principal, catalog: Catalog) -> None:
    require(principal, catalog, scope(catalog, MANAGE_USERS))
    if not principal.is_admin:
        raise Forbidden(
            "only administrators may manage other users' API keys", code="admin-required"
        )


def _require_own_key_manager(principal: Principal, catalog: Catalog) -> None:
    # A password caller is the person; a key must be unrestricted (BTCPay's rule).
    if principal.via == "key":
        require(principal, catalog, UNRESTRICTED)


async def _create(
    request: web.Request, services: Services, principal: Principal, owner_ref: str
) -> NewKey:
    body = greenfield_key_request(await read_json(request))
    check_key_request(services.keys, body)
    owner = await services.users.find(owner_ref)
    return await services.keys.create(
        owner=owner, creator=principal, label=body.label, permissions=body.permissions
    )


async def create_own_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = (await authenticate(request, passwords=True)).principal
    _require_own_key_manager(principal, services.policy.catalog)
    new = await _create(request, services, principal, principal.user_id)
    return json_response(api_key_data(new.record, new.text))


async def create_user_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = (await authenticate(request, passwords=True)).principal
    _require_user_manager(principal, services.policy.catalog)
    new = await _create(request, services, principal, request.match_info["idOrEmail"])
    return json_response(api_key_data(new.record, new.text))


async def get_current(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    caller = await authenticate(request, passwords=False, path_rule=False)
    key = await services.store.get_key(caller.principal.key_id or "")
    if key is None:
        raise NotFound("API key not found", code="apikey-not-found")
    return json_response(api_key_data(key, caller.key_text))


async def revoke_current(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    caller = await authenticate(request, passwords=False, path_rule=False)
    principal = caller.principal
    key = await services.keys.get_owned(principal.key_id or "", principal.user_id)
    revoked = await services.keys.revoke(key, actor=principal)
    return json_response(api_key_data(revoked, caller.key_text))


async def revoke_own_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = (await authenticate(request, passwords=True)).principal
    _require_own_key_manager(principal, services.policy.catalog)
    key = await services.keys.get_owned(request.match_info["apikey"], principal.user_id)
    await services.keys.revoke(key, actor=principal)
    return _revoked()


async def revoke_user_key(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = (await authenticate(request, passwords=True)).principal
    _require_user_manager(principal, services.policy.catalog)
    owner = await services.users.find(request.match_info["idOrEmail"])
    key = await services.keys.get_owned(request.match_info["apikey"], owner.id)
    await services.keys.revoke(key, actor=principal)
    return _revoked()


def _revoked() -> web.Response:
    # BTCPay answers an empty 200 here (its spec: "The key has been deleted"); only
    # DELETE /api/v1/api-keys/current answers the revoked key's ApiKeyData.
    return web.Response(status=200, headers={"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    add_routes(app, "greenfield", "/api/v1/api-keys", {"POST": create_own_key})
    add_routes(
        app,
        "greenfield",
        "/api/v1/api-keys/current",
        {"GET": get_current, "DELETE": revoke_current},
    )
    add_routes(app, "greenfield", "/api/v1/api-keys/{apikey}", {"DELETE": revoke_own_key})
    add_routes(app, "greenfield", "/api/v1/users/{idOrEmail}/api-keys", {"POST": create_user_key})
    add_routes(
        app,
        "greenfield",
        "/api/v1/users/{idOrEmail}/api-keys/{apikey}",
        {"DELETE": revoke_user_key},
    )

"""The code variant of the authorize flow (beyond BTCPay's spec): one-time codes.

With `response_type=code` the redirect receives a `code` (and the application's `state`)
instead of the key, by the same auto-submitting form POST as the key flow, so the code stays
out of URLs and server logs. The application then exchanges it, server to server, at
`POST /api-keys/token` (form or JSON: `code`, `code_verifier`) for
`{"apiKey", "userId", "permissions"}` (and `previousKeyExpiresAt` when it replaced
the application's previous key, which works until then).

* A code lives `authorization_code_ttl` seconds (60 by default) and works once: redeeming is
  one `DELETE ... RETURNING`, so of two concurrent redeemers on any instances exactly one
  gets it, and a failed attempt (wrong verifier, expired) uses it up too.
* Only a keyed hash of the code is stored, and no key: the key is minted at exchange time,
  within the user's grants *at that moment*, so no plaintext key ever waits in the database.
* PKCE (RFC 7636) is optional and S256 only; once a challenge was given the verifier is
  required.
* Errors are OAuth-style JSON, `{"error", "error_description"}`, with status 400 (503 when
  the database is down), and every answer is `Cache-Control: no-store`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway import sessions
from gateway.api.body import read_json
from gateway.api.schemas import iso
from gateway.errors import BadRequest, Forbidden, Invalid, PayloadTooLarge
from gateway.pages.authorize_request import AuthorizeRequest
from gateway.pages.form import FORM_TYPES, read_fields
from gateway.pages.pkce import verifier_matches
from gateway.policy.model import Perm
from gateway.services import Services
from gateway.settings import Settings
from gateway.state import SERVICES, SETTINGS
from gateway.store.base import Audit, AuthorizationCode, StoreError, User

log = logging.getLogger("gateway.pages")

TOKEN_PATH = "/api-keys/token"  # noqa: S105 - a URL path, not a secret
CODE_PURPOSE = b"keygate authorization code"
MAX_CODE = 128
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def code_hash(settings: Settings, code: str) -> bytes:
    return sessions.keyed_hash(settings, CODE_PURPOSE, code)


async def issue_code(
    services: Services,
    settings: Settings,
    *,
    user: User,
    request: AuthorizeRequest,
    permissions: Sequence[Perm],
    label: str,
    replace_key_id: str | None,
) -> str:
    """Store a new code for this consent and return it (the only copy of the code)."""
    assert request.redirect is not None  # parse_authorize_request guarantees it
    code = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    record = AuthorizationCode(
        code_hash=code_hash(settings, code),
        user_id=user.id,
        permissions=tuple(str(p) for p in permissions),
        label=label,
        application_identifier=request.application_identifier,
        redirect_origin=request.redirect.origin,
        code_challenge=request.code_challenge,
        replace_key_id=replace_key_id,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.authorization_code_ttl),
    )
    detail = {
        "permissions": list(record.permissions),
        "application": request.application_identifier,
        "origin": request.redirect.origin,
        "pkce": request.code_challenge is not None,
    }
    await services.store.create_authorization_code(
        record, Audit(f"user:{user.id}", "code.issue", f"user:{user.id}", detail)
    )
    return code


class _TokenError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def _json(body: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=NO_STORE,
    )


async def _params(request: web.Request) -> dict[str, str]:
    """The body's parameters, from a form or a JSON object; only single text values.

    Bodies are read as on every other endpoint (size limit, depth, UTF-8); their refusals
    become OAuth's `invalid_request`.
    """
    items: list[tuple[str, Any]]
    try:
        if request.content_type == "application/json":
            data = await read_json(request)
            if not isinstance(data, dict):
                raise _TokenError("invalid_request", "the body must be a JSON object")
            items = list(data.items())
        elif request.content_type in FORM_TYPES:
            items = list(await read_fields(request))
        else:
            raise _TokenError(
                "invalid_request", "send application/x-www-form-urlencoded or application/json"
            )
    except (Invalid, BadRequest) as exc:
        raise _TokenError("invalid_request", exc.message) from None
    out: dict[str, str] = {}
    for name, value in items:
        if name in out:
            raise _TokenError("invalid_request", f"{name} given more than once")
        if not isinstance(value, str):
            raise _TokenError("invalid_request", f"{name} must be a string")
        out[name] = value
    return out


async def token(request: web.Request) -> web.StreamResponse:
    """`POST /api-keys/token`: exchange a code for a freshly minted key."""
    try:
        return await _exchange(request)
    except _TokenError as exc:
        return _json({"error": exc.error, "error_description": exc.description}, exc.status)
    except (web.HTTPRequestEntityTooLarge, PayloadTooLarge):
        return _json({"error": "invalid_request", "error_description": "body too large"}, 413)
    except StoreError as exc:
        log.warning("code exchange: storage failed: %s", type(exc).__name__)
        return _json(
            {
                "error": "temporarily_unavailable",
                "error_description": "the database cannot be reached; try again",
            },
            503,
        )


async def _exchange(request: web.Request) -> web.Response:
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    params = await _params(request)
    grant_type = params.get("grant_type", "authorization_code")
    if grant_type != "authorization_code":
        raise _TokenError("unsupported_grant_type", "only authorization_code is supported")
    code = params.get("code", "")
    if not code or len(code) > MAX_CODE or not code.isascii():
        raise _TokenError("invalid_request", "code is missing or malformed")
    record = await services.store.consume_authorization_code(code_hash(settings, code))
    if record is None:
        raise _TokenError("invalid_grant", "the code is unknown or was already used")
    if record.expires_at <= datetime.now(UTC):
        raise _TokenError("invalid_grant", "the code has expired")
    verifier = params.get("code_verifier")
    if record.code_challenge is not None:
        if not verifier_matches(record.code_challenge, verifier):
            raise _TokenError("invalid_grant", "code_verifier does not match the code_challenge")
    elif verifier is not None:
        raise _TokenError("invalid_grant", "no code_challenge was sent for this code")
    user = await services.store.get_user(record.user_id)
    if user is None or user.disabled:
        raise _TokenError("invalid_grant", "the user who authorized this can no longer do so")
    principal = sessions.principal_for(services.policy.catalog, user)
    old = None
    if record.replace_key_id is not None:
        old = await services.store.get_key(record.replace_key_id)
        if old is not None and old.user_id != user.id:
            old = None
    try:
        new = await services.keys.create(
            owner=user,
            creator=principal,
            label=record.label,
            permissions=list(record.permissions),
            application_identifier=record.application_identifier,
            redirect_origin=record.redirect_origin,
            replacing=old,
            grace=timedelta(seconds=settings.reauthorize_grace),
        )
    except (Forbidden, Invalid) as exc:
        # The user lost a grant between consent and exchange: nothing is minted.
        raise _TokenError("invalid_grant", exc.message) from None
    log.info("code exchanged for key %s (user %s)", new.record.id, user.id)
    body: dict[str, Any] = {
        "apiKey": new.text,
        "userId": user.id,
        "permissions": list(new.record.permissions),
    }
    if new.previous is not None:
        # The application's previous key works until then: time to switch over.
        body["previousKeyExpiresAt"] = iso(new.previous.expires_at)
    return _json(body)

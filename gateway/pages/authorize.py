"""`/api-keys/authorize`: an application asks the user for a key (BTCPay's authorize flow).

GET shows the consent page (after a login if needed, then back to the same request). The
consent form carries the request's query string signed for this user, and the POST works
from that signed query alone, re-parsed by `authorize_request.py`: under `strict=true` the
form's permission fields are never read. On consent the key (or, with `response_type=code`,
a one-time code) is handed to `redirect` by an auto-submitting form POST; the hand-off page's
CSP lets forms go to that one origin only. Cancel creates nothing.

Nothing is ever sent to a redirect that failed validation: a bad request is an error page
on this server, not a redirect with an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from gateway import sessions
from gateway.api.schemas import iso
from gateway.errors import BadRequest, Forbidden, Invalid
from gateway.keys.manage import MAX_LABEL
from gateway.pages import consent
from gateway.pages.account import KEYS_PATH
from gateway.pages.authorize_request import (
    AuthorizeRequest,
    RequestErrors,
    parse_authorize_request,
)
from gateway.pages.codes import issue_code
from gateway.pages.login import login_url
from gateway.pages.render import first, read_form, render, see_other
from gateway.pages.views import describe, duration_text, key_view, resource_names
from gateway.state import SERVICES, SETTINGS
from gateway.store.base import ApiKey, User

AUTHORIZE_PATH = "/api-keys/authorize"
SIGN_PURPOSE = "authorize"
DEFAULT_LABEL = "Authorized application"
MAX_QUERY_FIELDS = 300


def _pairs(raw_query: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(raw_query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise BadRequest("the authorization request has too many parameters") from None


def _parse(request: web.Request, raw_query: str) -> AuthorizeRequest:
    settings = request.app[SETTINGS]
    parsed = parse_authorize_request(
        _pairs(raw_query),
        request.app[SERVICES].policy.catalog,
        allow_insecure_redirects=settings.allow_insecure_redirects,
    )
    if isinstance(parsed, RequestErrors):
        raise _RequestRefused(parsed.errors)
    return parsed


class _RequestRefused(Invalid):
    """An authorize request that cannot be used: 400, with each problem listed."""

    status = 400
    code = "bad-authorize-request"


def _signed_text(user: User, raw_query: str) -> str:
    return f"{user.id}\n{raw_query}"


async def authorize_page(request: web.Request) -> web.StreamResponse:
    raw_query = request.rel_url.raw_query_string
    parsed = _parse(request, raw_query)
    session = await sessions.load_session(request)
    if session.user is None:
        return see_other(login_url(request.rel_url.raw_path_qs))
    return await _consent_page(request, session.user, parsed, raw_query)


async def _consent_page(
    request: web.Request,
    user: User,
    req: AuthorizeRequest,
    raw_query: str,
    *,
    error: str | None = None,
    status: int = 200,
    chosen: Sequence[str] | None = None,
    label: str | None = None,
) -> web.Response:
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    catalog = services.policy.catalog
    held = sessions.principal_of(request, user).grants
    resources = await services.store.list_resources()
    stores = consent.picker_stores(held, catalog, resources)
    names = resource_names(resources)
    view = consent.consent_view(req, held, catalog, stores)
    now = datetime.now(UTC)
    existing = consent.replaceable(await services.keys.list_for(user.id), req, catalog, now)
    checked = set(chosen) if chosen is not None else {str(p) for p in req.permissions}

    def line(offer: consent.Offer) -> dict[str, Any]:
        kind = catalog.permissions[offer.perm.name].scope or ""
        return {
            "view": describe(catalog, offer.perm, names),
            "available": offer.available,
            "checked": str(offer.perm) in checked and offer.available,
            "selective": offer.perm in view.selective,
            "reach": [names.get((kind, r), r) for r in offer.reach],
            "reach_type": catalog.resource_types.get(kind, kind).lower(),
        }

    context = {
        "req": req,
        "app_name": req.application_name,
        "requested": [line(o) for o in view.requested],
        "extra": [line(o) for o in view.extra],
        "blocked": view.blocked,
        "dropped": req.dropped,
        "label": label if label is not None else req.application_name or DEFAULT_LABEL,
        "max_label": MAX_LABEL,
        "unavailable": [str(p) for p in view.unavailable],
        "stores": view.stores,
        "has_selective": bool(view.selective),
        "existing": key_view(existing, catalog, names, now=now) if existing else None,
        "old_key_stops": duration_text(settings.reauthorize_grace),
        "request_query": raw_query,
        "signature": sessions.sign(settings, SIGN_PURPOSE, _signed_text(user, raw_query)),
        "error": error,
    }
    return await render(request, "authorize.html", context, status=status)


async def authorize_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    if not await sessions.csrf_valid(request, first(form, "csrf")):
        raise Forbidden(
            "This consent form had expired or did not come from this site. Nothing was "
            "created. Start again from the application.",
            code="csrf-failed",
        )
    raw_query = first(form, "request")
    session = await sessions.load_session(request)
    if session.user is None:
        # The login lapsed while the page was open: log in again, then see the request anew.
        return see_other(login_url(f"{AUTHORIZE_PATH}?{raw_query}"))
    user = session.user
    settings = request.app[SETTINGS]
    if not sessions.verify_signature(
        settings, SIGN_PURPOSE, _signed_text(user, raw_query), first(form, "signature")
    ):
        raise BadRequest(
            "This consent form was changed or belongs to another login. Nothing was created. "
            "Start again from the application."
        )
    req = _parse(request, raw_query)
    decision = first(form, "decision")
    if decision == "cancel":
        return see_other(KEYS_PATH)
    if decision not in ("authorize", "replace"):
        raise BadRequest("choose Authorize or Cancel")
    return await _grant(request, user, req, raw_query, form, replace=decision == "replace")


async def _grant(
    request: web.Request,
    user: User,
    req: AuthorizeRequest,
    raw_query: str,
    form: Mapping[str, list[str]],
    *,
    replace: bool,
) -> web.Response:
    services, settings = request.app[SERVICES], request.app[SETTINGS]
    catalog = services.policy.catalog
    principal = sessions.principal_of(request, user)
    registered = await services.store.list_resources(consent.STORE)
    stores = consent.picker_stores(principal.grants, catalog, registered)
    chosen = form.get("permission", [])
    raw_label = first(form, "label")
    try:
        # The user may rename the key (BTCPay lets him); blank means the application's name.
        label = services.keys.check_label(raw_label) or req.application_name or DEFAULT_LABEL
    except Invalid as exc:
        return await _consent_page(
            request, user, req, raw_query, error=exc.message, status=400, chosen=chosen
        )
    outcome = consent.decide(
        req,
        principal.grants,
        catalog,
        stores,
        chosen_permissions=chosen,
        chosen_stores=form.get("store", []),
    )
    if isinstance(outcome, consent.ConsentRefused):
        return await _consent_page(
            request,
            user,
            req,
            raw_query,
            error=outcome.message,
            status=403,
            chosen=chosen,
            label=label,
        )
    old = None
    if replace:
        old = await _key_to_replace(request, user, req, first(form, "replace"))
    if req.code_flow:
        code = await issue_code(
            services,
            settings,
            user=user,
            request=req,
            permissions=outcome.permissions,
            label=label,
            replace_key_id=old.id if old else None,
        )
        fields = [("code", code)] + ([("state", req.state)] if req.state is not None else [])
        return await _handoff(request, req, fields)
    try:
        new = await services.keys.create(
            owner=user,
            creator=principal,
            label=label,
            permissions=[str(p) for p in outcome.permissions],
            application_identifier=req.application_identifier,
            redirect_origin=req.redirect.origin if req.redirect else None,
            replacing=old,
            grace=timedelta(seconds=settings.reauthorize_grace),
        )
    except (Forbidden, Invalid) as exc:
        return await _consent_page(
            request, user, req, raw_query, error=exc.message, status=403, chosen=chosen, label=label
        )
    if req.redirect is None:
        names = resource_names(await services.store.list_resources())
        return await render(
            request,
            "key_created.html",
            {
                "key_text": new.text,
                "key": key_view(new.record, catalog, names, now=datetime.now(UTC)),
                "application": req.application_name,
            },
            status=201,
        )
    fields = [("apiKey", new.text), ("userId", user.id)]
    fields += [("permissions[]", p) for p in new.record.permissions]
    if new.previous is not None and new.previous.expires_at is not None:
        # The application's previous key works until then: time to switch over.
        fields.append(("previousKeyExpiresAt", iso(new.previous.expires_at) or ""))
    return await _handoff(request, req, fields)


async def _key_to_replace(
    request: web.Request, user: User, req: AuthorizeRequest, key_id: str
) -> ApiKey:
    services = request.app[SERVICES]
    keys = await services.keys.list_for(user.id)
    match = consent.replaceable(keys, req, services.policy.catalog, datetime.now(UTC))
    if match is None or match.id != key_id:
        raise BadRequest(
            "The key this application held has changed since the page was shown. Nothing was "
            "created. Start again from the application."
        )
    return match


async def _handoff(
    request: web.Request, req: AuthorizeRequest, fields: list[tuple[str, str]]
) -> web.Response:
    """The page that POSTs the key (or code) to the application, by itself."""
    assert req.redirect is not None
    return await render(
        request,
        "handoff.html",
        {
            "redirect": req.redirect,
            "fields": fields,
            "app_name": req.application_name,
            "bare": True,  # no logout form: this page's CSP lets forms go to one origin only
        },
        form_action=req.redirect.origin,
    )

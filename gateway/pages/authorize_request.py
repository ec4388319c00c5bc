"""The `/api-keys/authorize` query: parse and validate it into a value, or a list of errors.

Pure: it takes the query as (name, value) pairs and the catalog, and returns
`AuthorizeRequest` or `RequestErrors`. The consent page, the consent POST (which re-parses
the signed query, never the form) and the code flow all start from this one value.

Parameters (BTCPay's, plus the code variant)::

    applicationName        text shown to the user (optional)
    redirect               where the key is POSTed (optional; see redirect_url.py); empty
                           is the same as absent
    applicationIdentifier  lets a re-authorization replace the app's key (only with redirect)
    permissions            repeated; catalog permissions, `name` or `name:resourceId`;
                           names the catalog does not know are dropped and listed in
                           `dropped` (BTCPay drops them too), other mistakes are errors
    strict                 true (default): exactly the requested permissions
    selectiveStores        false (default); true: the user picks the stores
    response_type          absent: the key itself; `code`: a one-time code (needs redirect)
    state                  echoed back with the code
    code_challenge         PKCE (RFC 7636), S256 only
    code_challenge_method  S256 (the default here; `plain` is refused)

Booleans accept `true`/`false` in any case. A single-valued parameter given twice is refused
rather than resolved: two parsers reading the same URL must never see different requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.pages.redirect_url import Redirect, RedirectRefused, check_redirect
from gateway.policy.model import Catalog, Perm, UnknownPermission

MAX_NAME = 200
MAX_IDENTIFIER = 200
MAX_STATE = 500
MAX_PERMISSIONS = 256
MAX_SHOWN = 100  # characters of a dropped permission shown back
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATE = re.compile(r"[\x20-\x7e]+")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
SINGLE = (
    "applicationName",
    "redirect",
    "applicationIdentifier",
    "strict",
    "selectiveStores",
    "response_type",
    "state",
    "code_challenge",
    "code_challenge_method",
)


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    application_name: str | None
    redirect: Redirect | None
    application_identifier: str | None  # None unless a redirect was given
    permissions: tuple[Perm, ...]
    strict: bool = True
    selective_stores: bool = False
    response_type: str | None = None  # None (the key itself) or "code"
    state: str | None = None
    code_challenge: str | None = None
    dropped: tuple[str, ...] = ()  # requested names this catalog does not know, as given

    @property
    def code_flow(self) -> bool:
        return self.response_type == "code"


@dataclass(frozen=True, slots=True)
class RequestErrors:
    errors: tuple[tuple[str, str], ...]  # (parameter, what is wrong with it)


def parse_authorize_request(
    pairs: Iterable[tuple[str, str]], catalog: Catalog, *, allow_insecure_redirects: bool = False
) -> AuthorizeRequest | RequestErrors:
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        values.setdefault(key, []).append(value)
    errors: list[tuple[str, str]] = []
    for key in SINGLE:
        if len(values.get(key, ())) > 1:
            errors.append((key, "given more than once"))
    single = {key: vs[0] for key, vs in values.items() if key in SINGLE and len(vs) == 1}

    name = _text(single.get("applicationName"), "applicationName", MAX_NAME, errors)
    redirect = None
    if single.get("redirect"):  # `redirect=` empty means no redirect, as in BTCPay
        checked = check_redirect(single["redirect"], allow_insecure=allow_insecure_redirects)
        if isinstance(checked, RedirectRefused):
            errors.append(("redirect", checked.reason))
        else:
            redirect = checked
    identifier = _text(
        single.get("applicationIdentifier"), "applicationIdentifier", MAX_IDENTIFIER, errors
    )
    strict = _boolean(single.get("strict"), "strict", True, errors)
    selective = _boolean(single.get("selectiveStores"), "selectiveStores", False, errors)
    permissions, dropped = _permissions(values.get("permissions", []), catalog, errors)

    response_type = single.get("response_type")
    if response_type is not None and response_type != "code":
        errors.append(("response_type", "only `code` is supported (or leave it out)"))
    code_flow = response_type == "code"
    if code_flow and not single.get("redirect"):
        errors.append(("response_type", "the code flow needs a redirect"))
    state = single.get("state")
    if state is not None and (len(state) > MAX_STATE or not _STATE.fullmatch(state)):
        errors.append(("state", f"at most {MAX_STATE} printable ASCII characters"))
    challenge = single.get("code_challenge")
    method = single.get("code_challenge_method")
    if challenge is not None or method is not None:
        if not code_flow:
            errors.append(("code_challenge", "PKCE applies only with response_type=code"))
        if challenge is None:
            errors.append(("code_challenge", "code_challenge_method given without a challenge"))
        elif not _CHALLENGE.fullmatch(challenge):
            errors.append(("code_challenge", "expected 43 to 128 base64url characters"))
        if method is not None and method != "S256":
            errors.append(("code_challenge_method", "only S256 is supported"))
    if errors:
        return RequestErrors(tuple(errors))
    return AuthorizeRequest(
        application_name=name,
        redirect=redirect,
        # BTCPay ignores the identifier without a redirect: it matches keys by both.
        application_identifier=identifier if redirect is not None else None,
        permissions=permissions,
        strict=strict,
        selective_stores=selective,
        response_type=response_type,
        state=state if code_flow else None,
        code_challenge=challenge,
        dropped=dropped,
    )


def _text(value: str | None, name: str, limit: int, errors: list[tuple[str, str]]) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > limit:
        errors.append((name, f"at most {limit} characters"))
        return None
    if _CONTROL.search(value):
        errors.append((name, "must not contain control characters"))
        return None
    return value or None


def _boolean(value: str | None, name: str, default: bool, errors: list[tuple[str, str]]) -> bool:
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    errors.append((name, "must be true or false"))
    return default


def _permissions(
    raws: list[str], catalog: Catalog, errors: list[tuple[str, str]]
) -> tuple[tuple[Perm, ...], tuple[str, ...]]:
    if len(raws) > MAX_PERMISSIONS:
        errors.append(("permissions", f"at most {MAX_PERMISSIONS} permissions"))
        return (), ()
    out: dict[Perm, None] = {}
    dropped: dict[str, None] = {}
    for raw in raws:
        try:
            out.setdefault(catalog.parse(raw), None)
        except UnknownPermission:
            # Shown back to the user: no control characters, and a bounded length.
            text = _CONTROL.sub("?", raw.strip())
            if len(text) > MAX_SHOWN:
                text = text[:MAX_SHOWN] + "…"
            dropped.setdefault(text, None)
        except ValueError as exc:
            errors.append(("permissions", str(exc)))
    return tuple(out), tuple(dropped)

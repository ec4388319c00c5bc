"""Finding the one credential in a request's headers. Pure; no I/O.

Accepted carriers (DESIGN.md): `X-API-KEY: <key>`, `Authorization: token <key>`,
`Authorization: Bearer <key>` (scheme case-insensitive), `Authorization: Basic
base64(haplo:<key>)`, and `Authorization: Basic base64(email:password)` where a route allows
passwords. Exactly one credential per request: two carriers, or one header twice, is a 400 —
an intermediary and the gateway must never disagree on which one counts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from gateway.errors import BadRequest, Unauthenticated
from gateway.records import maker

MAX_HEADER_VALUE: Final = 4096
HAPLO_USER: Final = "haplo"


class KeyCredential(NamedTuple):
    """A presented API key (a named tuple: built per request; the repr never shows the key)."""

    key: str
    carrier: str  # "x-api-key", "token", "bearer", "basic-haplo"

    def __repr__(self) -> str:
        return f"KeyCredential(carrier={self.carrier!r})"


# Built per request: `KeyCredential(...)` without its Python-level __new__ (records.py).
_key: Final = maker(KeyCredential)


@dataclass(frozen=True, slots=True)
class PasswordCredential:
    email: str
    password: str

    def __repr__(self) -> str:
        return f"PasswordCredential(email={self.email!r})"


Credential = KeyCredential | PasswordCredential


def extract(authorization: Sequence[str], x_api_key: Sequence[str]) -> Credential | None:
    """The request's credential, None if it has none; BadRequest/Unauthenticated otherwise."""
    if len(authorization) > 1 or len(x_api_key) > 1:
        raise BadRequest(
            "send exactly one credential (a credential header appears twice)",
            code="duplicate-credential",
        )
    if authorization and x_api_key:
        raise BadRequest(
            "send exactly one credential (both Authorization and X-API-KEY)",
            code="duplicate-credential",
        )
    if x_api_key:
        return _key((_token(x_api_key[0], "X-API-KEY"), "x-api-key"))
    if authorization:
        return _authorization(authorization[0])
    return None


def _token(value: str, where: str) -> str:
    value = value.strip()
    if not value:
        raise Unauthenticated(f"the {where} credential is empty", code="malformed-credential")
    if (
        len(value) > MAX_HEADER_VALUE
        or not value.isascii()
        or not value.isprintable()
        or " " in value
    ):
        raise Unauthenticated(f"the {where} credential is malformed", code="malformed-credential")
    return value


def _authorization(value: str) -> Credential:
    if len(value) > MAX_HEADER_VALUE or not value.isascii():
        raise Unauthenticated("the Authorization header is malformed", code="malformed-credential")
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    if scheme in {"token", "bearer"}:
        return _key((_token(rest, "Authorization"), scheme))
    if scheme == "basic":
        return _basic(rest.strip())
    raise Unauthenticated(
        "unsupported Authorization scheme (use Bearer, token or Basic)", code="malformed-credential"
    )


def _basic(encoded: str) -> Credential:
    try:
        raw = base64.b64decode(encoded, validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthenticated(
            "the Basic credential is not valid base64 of UTF-8 text", code="malformed-credential"
        ) from None
    user, sep, secret = text.partition(":")
    if not sep or not user or not secret or not text.isprintable():
        raise Unauthenticated(
            "the Basic credential must be user:password", code="malformed-credential"
        )
    if user == HAPLO_USER:
        return KeyCredential(_token(secret, "Basic"), "basic-haplo")
    return PasswordCredential(user, secret)

"""Finding the one credential in a request's headers (pure; no fixtures)."""

from __future__ import annotations

import base64

import pytest

from gateway.credentials import MAX_HEADER_VALUE, KeyCredential, PasswordCredential, extract
from gateway.errors import BadRequest, Unauthenticated

KEY = "apk_" + "A" * 54


def basic(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "carrier"),
    [
        ((), (KEY,), "x-api-key"),
        ((f"token {KEY}",), (), "token"),
        ((f"Token {KEY}",), (), "token"),
        ((f"Bearer {KEY}",), (), "bearer"),
        ((f"bEaReR {KEY}",), (), "bearer"),
        ((f"BEARER   {KEY}  ",), (), "bearer"),
        ((basic(f"haplo:{KEY}"),), (), "basic-haplo"),
        ((f"basic {base64.b64encode(f'haplo:{KEY}'.encode()).decode()}",), (), "basic-haplo"),
    ],
)
def test_every_key_carrier_yields_the_key(
    authorization: tuple[str, ...], x_api_key: tuple[str, ...], carrier: str
) -> None:
    """X-API-KEY, token, Bearer (any case) and Basic haplo:<key> all carry the same key."""
    assert extract(authorization, x_api_key) == KeyCredential(KEY, carrier)


def test_basic_email_password_is_a_password_credential() -> None:
    """Basic with any user but `haplo` is an email and password (the password may hold ':')."""
    found = extract((basic("ann@example.com:pa:ss word"),), ())
    assert found == PasswordCredential("ann@example.com", "pa:ss word")


def test_no_credential_is_none() -> None:
    """A request without either header has no credential (the caller answers 401)."""
    assert extract((), ()) is None


@pytest.mark.parametrize(
    ("authorization", "x_api_key"),
    [
        ((f"Bearer {KEY}", f"Bearer {KEY}"), ()),
        ((), (KEY, KEY)),
        ((f"Bearer {KEY}",), (KEY,)),
        ((basic(f"haplo:{KEY}"),), (KEY,)),
    ],
)
def test_two_credentials_are_a_bad_request(
    authorization: tuple[str, ...], x_api_key: tuple[str, ...]
) -> None:
    """One header twice, or two carriers, is 400: the gateway never picks one of several."""
    with pytest.raises(BadRequest) as caught:
        extract(authorization, x_api_key)
    assert caught.value.code == "duplicate-credential"


@pytest.mark.parametrize(
    ("authorization", "x_api_key"),
    [
        ((), ("",)),
        ((), ("   ",)),
        (("Bearer",), ()),
        (("Bearer ",), ()),
        (("",), ()),
        (("Digest abc",), ()),
        ((f"Bearer\t{KEY}",), ()),
        ((f"Bearer {KEY}, Bearer {KEY}",), ()),
        ((), (f"{KEY}, {KEY}",)),
        ((), ("apk_ké",)),
        (("Bearer apk_\u00e9t\u00e9",), ()),
        ((), ("apk_\x00abc",)),
        ((), ("A" * (MAX_HEADER_VALUE + 1),)),
        (("Bearer " + "A" * 10_000,), ()),
        (("Basic !!!notbase64",), ()),
        (("Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),), ()),
        ((basic("no-colon"),), ()),
        ((basic(":password"),), ()),
        ((basic("haplo:"),), ()),
        ((basic("ann@example.com:pa\x00ss"),), ()),
        ((basic(f"haplo:{KEY} x"),), ()),
        (("Basic",), ()),
    ],
)
def test_malformed_credentials_are_unauthenticated(
    authorization: tuple[str, ...], x_api_key: tuple[str, ...]
) -> None:
    """Empty, non-ASCII, control characters, oversized, bad base64, unknown scheme: 401."""
    with pytest.raises(Unauthenticated) as caught:
        extract(authorization, x_api_key)
    assert caught.value.code == "malformed-credential"
    assert "WWW-Authenticate" in caught.value.headers


def test_credentials_never_show_secrets_in_repr() -> None:
    """repr() of a credential names the carrier or email, never the key or password."""
    assert KEY not in repr(KeyCredential(KEY, "bearer"))
    assert "hunter2" not in repr(PasswordCredential("a@example.com", "hunter2"))

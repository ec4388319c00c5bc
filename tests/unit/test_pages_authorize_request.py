"""Parsing and validating the /api-keys/authorize query (pure)."""

from __future__ import annotations

import pytest

from gateway.pages.authorize_request import (
    AuthorizeRequest,
    RequestErrors,
    parse_authorize_request,
)
from gateway.policy.model import Catalog, Perm, PermissionDef

CATALOG = Catalog.build(
    [
        PermissionDef("shop.invoices.view", "View invoices", scope="store"),
        PermissionDef("shop.invoices.create", "Create invoices", scope="store"),
        PermissionDef("shop.reports", "Reports"),
    ],
    {"store": "Store"},
)


def parse(*pairs: tuple[str, str], insecure: bool = False) -> AuthorizeRequest | RequestErrors:
    return parse_authorize_request(list(pairs), CATALOG, allow_insecure_redirects=insecure)


def ok(*pairs: tuple[str, str]) -> AuthorizeRequest:
    result = parse(*pairs)
    assert isinstance(result, AuthorizeRequest), result
    return result


def errors(*pairs: tuple[str, str]) -> dict[str, str]:
    result = parse(*pairs)
    assert isinstance(result, RequestErrors), result
    return dict(result.errors)


def test_empty_request_proves_the_account_exists() -> None:
    """No parameters: no permissions, strict, no redirect."""
    req = ok()
    assert req.permissions == ()
    assert req.strict is True
    assert req.selective_stores is False
    assert req.redirect is None


def test_spec_parameters_are_read() -> None:
    """Name, redirect, identifier, repeated permissions and both booleans are parsed."""
    req = ok(
        ("applicationName", "Your Application"),
        ("redirect", "https://gozo.example/cb"),
        ("applicationIdentifier", "gozo"),
        ("permissions", "shop.invoices.create"),
        ("permissions", "shop.invoices.view:S1"),
        ("permissions", "shop.invoices.create"),
        ("strict", "false"),
        ("selectiveStores", "TRUE"),
    )
    assert req.application_name == "Your Application"
    assert req.redirect is not None
    assert req.redirect.origin == "https://gozo.example"
    assert req.application_identifier == "gozo"
    assert req.permissions == (Perm("shop.invoices.create"), Perm("shop.invoices.view", "S1"))
    assert req.strict is False
    assert req.selective_stores is True


@pytest.mark.parametrize("text", ["true", "True", "TRUE"])
def test_booleans_accept_any_case(text: str) -> None:
    """strict and selectiveStores accept true/True/TRUE."""
    assert ok(("selectiveStores", text)).selective_stores is True
    assert (
        ok(
            (
                "strict",
                text.replace("true", "false").replace("TRUE", "FALSE").replace("True", "False"),
            )
        ).strict
        is False
    )


def test_bad_boolean_malformed_permission_and_bad_redirect_are_all_reported() -> None:
    """Every problem is named, per parameter."""
    found = errors(
        ("strict", "yes"),
        ("permissions", "shop.reports:S1"),
        ("redirect", "javascript:alert(1)"),
    )
    assert set(found) == {"strict", "permissions", "redirect"}


def test_unknown_permissions_are_dropped_and_listed() -> None:
    """As BTCPay does: names this catalog does not know are left out and listed, not errors."""
    req = ok(
        ("permissions", "shop.nope"),
        ("permissions", "btcpay.store.canfrobnicate:S1"),
        ("permissions", "shop.reports"),
        ("permissions", "shop.nope"),
        ("permissions", "x" * 300),
        ("permissions", "evil\x00name"),
    )
    assert req.permissions == (Perm("shop.reports"),)
    assert req.dropped == (
        "shop.nope",
        "btcpay.store.canfrobnicate:S1",
        "x" * 100 + "…",
        "evil?name",
    )


def test_empty_redirect_is_absent() -> None:
    """`redirect=` empty is no redirect (BTCPay's reading), so the identifier goes with it."""
    req = ok(("redirect", ""), ("applicationIdentifier", "gozo"))
    assert req.redirect is None
    assert req.application_identifier is None
    assert "response_type" in errors(("redirect", ""), ("response_type", "code"))


def test_identifier_without_redirect_is_ignored() -> None:
    """applicationIdentifier only counts with a redirect (as in BTCPay)."""
    assert ok(("applicationIdentifier", "gozo")).application_identifier is None


def test_repeated_single_parameters_are_refused() -> None:
    """Two redirects (parameter pollution) are an error, not a choice."""
    found = errors(("redirect", "https://a.example/"), ("redirect", "https://b.example/"))
    assert "given more than once" in found["redirect"]


def test_control_characters_in_the_name_are_refused() -> None:
    """An application name cannot carry control characters (log and display forging)."""
    assert "applicationName" in errors(("applicationName", "App\r\nInjected"))


def test_code_flow_needs_a_redirect_and_s256() -> None:
    """response_type=code needs a redirect; PKCE is S256 only and only with the code flow."""
    assert "response_type" in errors(("response_type", "code"))
    assert "response_type" in errors(("response_type", "token"))
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert "code_challenge_method" in errors(
        ("response_type", "code"),
        ("redirect", "https://a.example/"),
        ("code_challenge", challenge),
        ("code_challenge_method", "plain"),
    )
    assert "code_challenge" in errors(("code_challenge", challenge))
    req = ok(
        ("response_type", "code"),
        ("redirect", "https://a.example/"),
        ("code_challenge", challenge),
        ("state", "xyz"),
    )
    assert req.code_flow
    assert req.code_challenge == challenge
    assert req.state == "xyz"


def test_development_allows_plain_http_redirects() -> None:
    """The spec's http://gozo.com example works only where insecure redirects are allowed."""
    assert isinstance(parse(("redirect", "http://gozo.com")), RequestErrors)
    assert isinstance(parse(("redirect", "http://gozo.com"), insecure=True), AuthorizeRequest)

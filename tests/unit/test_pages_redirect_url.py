"""Which redirect URLs the authorize flow accepts (pure)."""

from __future__ import annotations

import pytest

from gateway.pages.redirect_url import Redirect, RedirectRefused, check_redirect

REFUSED = [
    "JavaScript:alert(1)",
    "javascript:alert(1)",
    " javascript:alert(1)",
    "\tjavascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "DATA:text/html;base64,PHNjcmlwdD4=",
    "http://evil.com",
    "http://evil.com/cb",
    "http://localhost:8000/cb",
    "https://user@host.example/cb",
    "https://user:pass@host.example/cb",
    "https://host.example/#frag",
    "https://host.example/cb#",
    "https:\\\\evil.com",
    "https:/\\evil.com",
    "https://evil.com\\@good.example",
    "https://host.example/\x00",
    "https://host.example/\r\nX: y",
    "https://host.example/\x7f",
    "https://host.example/ a",
    "https://hôst.example/",
    "https:evil.com",
    "https:/evil.com",
    "//evil.com",
    "ftp://host.example/",
    "https://",
    "https://:443/",
    "https://host.example:99999/",
    "https://host.example:abc/",
    "https://%65vil.com/",
    "https://[::1/",
    "https://" + "a" * 2050 + ".com/",
    "",
]


@pytest.mark.parametrize("raw", REFUSED)
def test_dangerous_redirects_are_refused(raw: str) -> None:
    """Other schemes, userinfo, fragments, backslashes, control chars and plain http are refused."""
    assert isinstance(check_redirect(raw), RedirectRefused)


@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("https://app.example/cb?x=1", "https://app.example"),
        ("HTTPS://App.Example:443/cb", "https://app.example"),
        ("https://app.example:8443/cb", "https://app.example:8443"),
        ("http://127.0.0.1:5000/cb", "http://127.0.0.1:5000"),
        ("http://[::1]:5000/cb", "http://[::1]:5000"),
        ("http://127.0.0.1/cb", "http://127.0.0.1"),
    ],
)
def test_https_and_loopback_http_are_accepted(raw: str, origin: str) -> None:
    """https anywhere and http to 127.0.0.1 / [::1] are accepted, with their origin."""
    result = check_redirect(raw)
    assert isinstance(result, Redirect)
    assert result.origin == origin


def test_development_relaxes_to_any_http() -> None:
    """allow_insecure_redirects accepts plain http, but still no javascript: or userinfo."""
    assert isinstance(check_redirect("http://gozo.com", allow_insecure=True), Redirect)
    assert isinstance(check_redirect("javascript:alert(1)", allow_insecure=True), RedirectRefused)
    assert isinstance(check_redirect("http://u@gozo.com", allow_insecure=True), RedirectRefused)

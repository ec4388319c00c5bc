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


@pytest.mark.parametrize(
    "raw",
    [
        "https://0x7f000001/cb",  # hex dword
        "https://0X7F000001/cb",
        "http://0x7f000001/cb",
        "https://0x7f.0.0.1/cb",  # hex part
        "http://0177.0.0.1/cb",  # octal part
        "https://0177.0.0.1/cb",
        "https://2130706433/cb",  # decimal dword
        "http://2130706433/cb",
        "https://127.1/cb",  # shortened
        "http://127.1/cb",
        "https://10.1.1/cb",
        "https://1.2.3.4.5/cb",  # five parts
        "https://256.0.0.1/cb",  # out of range
        "https://app.example.0x10/cb",  # a name whose last label is a number
        "https://app.42/cb",
        "https://0x7f000001./cb",  # with a trailing dot
    ],
)
def test_numeric_hosts_other_than_dotted_quad_are_refused(raw: str) -> None:
    """Hex, octal, dword and shortened IPv4 forms are refused: shown one way, used another."""
    refused = check_redirect(raw, allow_insecure=True)
    assert isinstance(refused, RedirectRefused)
    assert "dotted-quad" in refused.reason


@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("https://203.0.113.7/cb", "https://203.0.113.7"),
        ("https://0.0.0.0/cb", "https://0.0.0.0"),
        ("https://42.app.example/cb", "https://42.app.example"),
        ("https://0x10.app.example/cb", "https://0x10.app.example"),
        ("https://[2001:db8::1]/cb", "https://[2001:db8::1]"),
    ],
)
def test_dotted_quad_names_and_ipv6_are_accepted(raw: str, origin: str) -> None:
    """Dotted-quad IPv4, bracketed IPv6 and names with numeric labels (not last) are hosts."""
    accepted = check_redirect(raw)
    assert isinstance(accepted, Redirect)
    assert accepted.origin == origin


@pytest.mark.parametrize(
    ("raw", "url", "origin"),
    [
        ("https://app.example./cb", "https://app.example/cb", "https://app.example"),
        (
            "https://App.Example.:8443/cb?x=1",
            "https://app.example:8443/cb?x=1",
            "https://app.example:8443",
        ),
        ("http://127.0.0.1.:5000/cb", "http://127.0.0.1:5000/cb", "http://127.0.0.1:5000"),
        ("https://app.example.", "https://app.example", "https://app.example"),
    ],
)
def test_trailing_dot_host_is_accepted_and_shown_without_it(
    raw: str, url: str, origin: str
) -> None:
    """A fully qualified name's trailing dot is the same host: accepted, and dropped everywhere."""
    accepted = check_redirect(raw)
    assert accepted == Redirect(url, origin)


@pytest.mark.parametrize(
    "raw", ["https://app.example../cb", "https://./cb", "https://.app.example/cb"]
)
def test_empty_labels_are_still_refused(raw: str) -> None:
    """Only one trailing dot is a fully qualified name; empty labels elsewhere are refused."""
    assert isinstance(check_redirect(raw), RedirectRefused)

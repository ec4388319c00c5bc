"""Which `redirect` URLs the authorize flow may send a key to. Pure; no I/O.

A new API key is POSTed to this URL, so it must go over TLS: `https` only, or `http` to a
loopback address (`127.0.0.1`, `[::1]`) for desktop and command-line applications listening
on the user's own machine. `localhost` is refused on purpose: it is a name, and a name can
resolve elsewhere (RFC 8252 §8.3 prefers the literal addresses). Development mode may relax
this to any `http` URL (`allow_insecure_redirects`).

Hosts: a name, a dotted-quad IPv4 address (`127.0.0.1`) or a bracketed IPv6 address. Every
other numeric form a browser would also read as IPv4 (`0x7f000001`, `0177.0.0.1`,
`2130706433`, `127.1`) is refused: the page would show one thing while the browser goes to
another. A fully qualified name's trailing dot (`app.example.`) is accepted and dropped, from
the address shown and from the one the key is sent to.

Refused whatever the mode: other schemes (`javascript:`, `data:` in any case, with or without
leading whitespace), user information (`https://user@host` makes the address read as
something it is not), fragments, backslashes (browsers read `https:\\\\evil.com` as
`https://evil.com`), any whitespace or control character, non-ASCII text, and anything over
2048 characters.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_LENGTH = 2048
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})
# What a URL may contain at all: printable ASCII without space, quote marks, angle brackets
# or a backslash. Anything else is refused rather than guessed at.
_ALLOWED = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
)


@dataclass(frozen=True, slots=True)
class Redirect:
    """An accepted redirect: the URL as given (scheme lower-cased) and its origin."""

    url: str
    origin: str  # scheme://host[:port], default port left out; safe in a CSP header


@dataclass(frozen=True, slots=True)
class RedirectRefused:
    reason: str  # a sentence for the person reading the error page


def check_redirect(raw: str, *, allow_insecure: bool = False) -> Redirect | RedirectRefused:
    """Accept `raw` as a place to send a key, or say why not."""
    if not raw:
        return RedirectRefused("the redirect is empty")
    if len(raw) > MAX_LENGTH:
        return RedirectRefused(f"the redirect is longer than {MAX_LENGTH} characters")
    if "\\" in raw:
        return RedirectRefused("the redirect contains a backslash")
    if "#" in raw:
        return RedirectRefused("the redirect must not contain a fragment (#)")
    if not _ALLOWED.fullmatch(raw):
        return RedirectRefused(
            "the redirect contains spaces, control characters or characters outside ASCII"
        )
    scheme, sep, rest = raw.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in {"https", "http"}:
        return RedirectRefused("the redirect must be an https:// URL")
    if not rest.startswith("//"):
        return RedirectRefused("the redirect must be an absolute URL (https://host/...)")
    try:
        parts = urlsplit(scheme + ":" + rest)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return RedirectRefused("the redirect is not a valid URL")
    if "@" in parts.netloc:
        return RedirectRefused("the redirect must not contain a user name or password")
    try:
        port = parts.port
    except ValueError:
        return RedirectRefused("the redirect's port is not a number between 0 and 65535")
    host = _host(parts.netloc, port)
    if host is None:
        return RedirectRefused("the redirect has no valid host name")
    if _numeric_but_not_dotted_quad(host):
        return RedirectRefused(
            "the redirect's host is a number in a form other than a dotted-quad IPv4 address "
            "(write it as 127.0.0.1) or a bracketed IPv6 address"
        )
    if scheme == "http" and not allow_insecure and _bare(host) not in LOOPBACK_HOSTS:
        return RedirectRefused(
            "the redirect must use https:// (plain http:// is allowed only to 127.0.0.1 or [::1])"
        )
    default_port = 443 if scheme == "https" else 80
    origin = f"{scheme}://{host}" if port in (None, default_port) else f"{scheme}://{host}:{port}"
    url = scheme + ":" + rest
    if parts.hostname is not None and parts.hostname.endswith("."):
        # Drop the trailing dot where the URL names the host, so what is shown is what is used.
        netloc = host if port is None else f"{host}:{port}"
        url = f"{scheme}://{netloc}{rest[2 + len(parts.netloc) :]}"
    return Redirect(url, origin)


def _host(netloc: str, port: int | None) -> str | None:
    """The host part of `netloc`, lower-cased (IPv6 in brackets), or None when it is invalid."""
    host = netloc.rsplit(":", 1)[0] if port is not None or netloc.endswith(":") else netloc
    host = host.lower()
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]  # a fully qualified name: the same host
    if not _HOSTNAME.fullmatch(host):
        return None
    return host


def _numeric_but_not_dotted_quad(host: str) -> bool:
    """Whether a browser would read `host` as an IPv4 address written in a form other than
    the dotted quad: WHATWG URL parses a host whose last label is a number (decimal, or hex
    with 0x) as IPv4, in octal, hex, dword or shortened forms alike."""
    if host.startswith("["):
        return False
    last = host.rsplit(".", 1)[-1]
    if not (last.isdigit() or last.startswith("0x")):
        return False
    labels = host.split(".")
    return not (
        len(labels) == 4
        and all(x.isdigit() and (x == "0" or not x.startswith("0")) for x in labels)
        and all(int(x) <= 255 for x in labels)
    )


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host

"""API key format: generate, parse, checksum and mask. Pure; no I/O.

A key reads `<prefix>_<id><secret><check>`:

- `id`: 16 base62 characters (~95 bits), the public key id. `<prefix>_<id>` is the id that
  APIs, logs and audit records show; it lets an operator find a key without ever holding it.
- `secret`: 32 base62 characters from the OS CSPRNG (~190 bits).
- `check`: 6 base62 characters of CRC32 over everything before it, GitHub-style. A typo or
  truncated key is refused without any I/O, and secret scanners can confirm a leaked key
  offline before they report it.

Base62 keeps the key one "word" for double-click selection and safe in headers and URLs.

Legacy keys: BTCPay Server's keys are 40 hex characters (20 random bytes) with no prefix and
no checksum. Keys imported from BTCPay keep that form (`gateway import btcpay`); they are
hashed and looked up like ours, but nothing offline can tell a real one from a random string,
so deployments accept them only when `accept_legacy_keys` is on.
"""

from __future__ import annotations

import re
import secrets
import zlib
from collections.abc import Collection
from dataclasses import dataclass

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LEN = 16
SECRET_LEN = 32
CHECK_LEN = 6
BODY_LEN = ID_LEN + SECRET_LEN + CHECK_LEN
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,15}")
_BODY_RE = re.compile(rf"[0-9A-Za-z]{{{BODY_LEN}}}")
LEGACY_LEN = 40
# BTCPay writes lower-case hex and compares keys exactly; a key it holds in upper case (made
# by hand) is still 160 bits, and its exact text is what is hashed, so both cases are taken.
_LEGACY_RE = re.compile(rf"[0-9a-fA-F]{{{LEGACY_LEN}}}")
# Longest acceptable key: a 16-character prefix, "_", the body. Anything longer is refused
# before it is examined further.
MAX_KEY_LEN = 16 + 1 + BODY_LEN


class MalformedKey(ValueError):
    """The text is not a well-formed key of this deployment; `reason` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key that passed every offline check. `key_id` is public; `text` is the secret key."""

    prefix: str
    key_id: str
    text: str

    def __repr__(self) -> str:  # never let the secret reach a log through repr()
        return f"ParsedKey(key_id={self.key_id!r})"


def _b62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def checksum(text: str) -> str:
    """Six base62 characters of CRC32 over `text`."""
    return _b62(zlib.crc32(text.encode("ascii")), CHECK_LEN)


def _random_b62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def validate_prefix(prefix: str) -> str:
    if not PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"key prefix {prefix!r} must be 2-16 characters of lower-case letters and digits, "
            "starting with a letter"
        )
    return prefix


def new_key_id(prefix: str = "apk") -> str:
    """A fresh public key id, for a key whose text is not ours (an imported legacy key)."""
    return f"{prefix}_{_random_b62(ID_LEN)}"


def generate(prefix: str = "apk") -> ParsedKey:
    """A new key with a fresh id and secret."""
    head = f"{prefix}_{_random_b62(ID_LEN)}{_random_b62(SECRET_LEN)}"
    text = head + checksum(head)
    return ParsedKey(prefix, text[: len(prefix) + 1 + ID_LEN], text)


def parse(text: str, prefix: str = "apk", accepted: Collection[str] = ()) -> ParsedKey:
    """Check a presented key offline: prefix, length, alphabet, checksum. Raises MalformedKey.

    `accepted` are former prefixes still honoured after a prefix change: such keys parse like
    current ones, keeping their own prefix (their id and stored hash were made with it).
    """
    if len(text) > MAX_KEY_LEN:
        raise MalformedKey("too-long")
    head, sep, body = text.partition("_")
    if not sep or (head != prefix and head not in accepted):
        raise MalformedKey("wrong-prefix")
    if not _BODY_RE.fullmatch(body):
        raise MalformedKey("malformed")
    if checksum(text[:-CHECK_LEN]) != body[-CHECK_LEN:]:
        raise MalformedKey("bad-checksum")
    return ParsedKey(head, text[: len(head) + 1 + ID_LEN], text)


def is_legacy(text: str) -> bool:
    """Whether `text` has the form of a BTCPay Server key (40 hex characters)."""
    return len(text) == LEGACY_LEN and _LEGACY_RE.fullmatch(text) is not None


def looks_like_key_id(text: str, prefix: str = "apk", accepted: Collection[str] = ()) -> bool:
    """Whether `text` has the shape of a public key id (`apk_` + 16 base62), with the current
    prefix or one of the `accepted` former ones."""
    head, sep, body = text.partition("_")
    return (
        bool(sep)
        and (head == prefix or head in accepted)
        and len(body) == ID_LEN
        and body.isascii()
        and body.isalnum()
    )


def mask(key_id: str) -> str:
    """Display form (`apk_abc***xyz`) built from the public id alone, so it needs no secret."""
    head, _, body = key_id.partition("_")
    return f"{head}_{body[:3]}***{body[-3:]}"

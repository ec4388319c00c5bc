"""Leaked keys: GitHub secret scanning partner reports, checked offline. Pure; no I/O.

A report is a JSON list of `{token, type, url, source}` signed by GitHub: ECDSA P-256 with
SHA-256 over the raw body, the DER signature base64-encoded in `Github-Public-Key-Signature`
and the signing key named by `Github-Public-Key-Identifier`. Public keys come in GitHub's own
format (`{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}`), from a file in
the configuration and, where the deployment allows, refreshed from a URL.

Each token is first checked offline: a token of another prefix, or whose checksum does not
match, can never be one of ours and is a false positive without any lookup. The answer uses
the program's format: `[{token_raw, token_type, label: true_positive|false_positive}]`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.keys import format as keyformat

MAX_TOKENS = 1000
MAX_FIELD = 2048
Label = Literal["true_positive", "false_positive"]
LeakAction = Literal["revoke", "disable", "notify"]
LEAK_ACTIONS: tuple[LeakAction, ...] = ("revoke", "disable", "notify")


class ReportError(ValueError):
    """A report that cannot be read; the message says why (never a token)."""


class SignatureError(ValueError):
    """The signature is missing, malformed, by an unknown key, or does not match."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One reported token. `token` is a secret: never log it (repr shows only its type)."""

    token: str
    type: str
    url: str
    source: str

    def __repr__(self) -> str:
        return f"Finding(type={self.type!r}, source={self.source!r})"


def parse_report(body: bytes) -> list[Finding]:
    """The findings of a report body; ReportError naming what is wrong."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ReportError("the report is not a JSON document") from None
    if not isinstance(data, list):
        raise ReportError("the report must be a JSON list of {token, type, url, source}")
    if len(data) > MAX_TOKENS:
        raise ReportError(f"at most {MAX_TOKENS} tokens per report")
    findings = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise ReportError(f"item {i} must be an object with a string token")
        fields = {}
        for name in ("type", "url", "source"):
            value = item.get(name, "")
            fields[name] = value[:MAX_FIELD] if isinstance(value, str) else ""
        findings.append(Finding(item["token"][:MAX_FIELD], **fields))
    return findings


def could_be_ours(token: str, prefix: str, accepted: Collection[str] = ()) -> bool:
    """Whether the token passes every offline check (prefix, shape, checksum)."""
    try:
        keyformat.parse(token, prefix, accepted)
    except keyformat.MalformedKey:
        return False
    return True


def answer(finding: Finding, label: Label) -> dict[str, str]:
    return {"token_raw": finding.token, "token_type": finding.type, "label": label}


def report_digest(body: bytes, signature: str) -> bytes:
    """What replay protection remembers: the body and its signature, hashed together."""
    return hashlib.sha256(signature.encode("ascii", "replace") + b"\n" + body).digest()


# -- signatures ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """Signing keys by identifier (P-256 only)."""

    keys: Mapping[str, ec.EllipticCurvePublicKey]

    @classmethod
    def from_document(cls, data: Any) -> PublicKeys:
        """GitHub's `{"public_keys": [{"key_identifier", "key"}]}`; ValueError if unusable."""
        items = data.get("public_keys") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ValueError('expected {"public_keys": [{"key_identifier", "key"}, ...]}')
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for i, item in enumerate(items):
            ident = item.get("key_identifier") if isinstance(item, dict) else None
            pem = item.get("key") if isinstance(item, dict) else None
            if not isinstance(ident, str) or not isinstance(pem, str):
                raise ValueError(f"public_keys[{i}] needs key_identifier and key (PEM)")
            try:
                key = load_pem_public_key(pem.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise ValueError(f"public_keys[{i}].key is not a PEM public key") from None
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise ValueError(f"public_keys[{i}].key is not an ECDSA P-256 key")
            keys[ident] = key
        return cls(keys)

    def knows(self, identifier: str) -> bool:
        return identifier in self.keys

    def verify(self, body: bytes, identifier: str, signature: str) -> None:
        """Raises SignatureError unless `signature` (base64 DER) signs `body` with the key
        named `identifier`."""
        key = self.keys.get(identifier)
        if key is None:
            raise SignatureError("the signing key is not known")
        try:
            raw = base64.b64decode(signature.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise SignatureError("the signature is not base64") from None
        try:
            key.verify(raw, body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureError("the signature does not match the report") from None

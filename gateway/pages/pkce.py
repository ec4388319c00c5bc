"""PKCE (RFC 7636) for the code flow, S256 only. Pure; no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def s256(verifier: str) -> str:
    """The S256 challenge of a verifier: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(challenge: str, verifier: object) -> bool:
    """Whether `verifier` is well-formed and hashes to `challenge` (constant-time compare)."""
    if not isinstance(verifier, str) or not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)

"""Keyed hashing of API keys.

Keys carry ~190 bits of entropy, so a slow password hash buys nothing and would cost
milliseconds per request. HMAC-SHA256 under a server secret (the "pepper") means a stolen
database alone cannot even confirm a guessed key.
"""

from __future__ import annotations

import hashlib
import hmac


class KeyHasher:
    """HMAC-SHA256 of a key under the deployment's secret."""

    __slots__ = ("_pepper",)

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 32:
            raise ValueError("the hashing secret must be at least 32 bytes")
        self._pepper = pepper

    def digest(self, key_text: str) -> bytes:
        return hmac.digest(self._pepper, key_text.encode("ascii"), hashlib.sha256)

    def __repr__(self) -> str:
        return "KeyHasher(<secret>)"

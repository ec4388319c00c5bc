"""Retrievable keys (opt-in): an AES-256-GCM copy under a key-encryption key.

The key id is the associated data, so a ciphertext moved to another row does not decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class KeyVault:
    __slots__ = ("_aead",)

    def __init__(self, kek: bytes) -> None:
        self._aead = AESGCM(kek)

    def seal(self, key_id: str, key_text: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key_text.encode("ascii"), key_id.encode("ascii"))

    def open(self, key_id: str, sealed: bytes) -> str | None:
        try:
            plain = self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], key_id.encode("ascii")
            )
        except (InvalidTag, ValueError):
            return None
        return plain.decode("ascii")

    def __repr__(self) -> str:
        return "KeyVault(<kek>)"

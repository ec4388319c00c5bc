"""Signed identity assertions for upstreams: a short-lived JWT (EdDSA / Ed25519).

With `identity_assertion` on, every forwarded request carries `X-Gateway-Assertion`, a
compact JWT whose claims repeat the identity headers (`sub` user id, `key_id`,
`permissions`) with `iss`, `iat`, `exp` and `aud`, the name of the upstream (as the policy
names it) the request was forwarded to. An upstream that verifies it against
`/.well-known/jwks.json` — and checks `aud` is its own name — no longer has to trust the
network between it and the gateway, nor the other upstreams: one cannot replay an assertion
it received to another.

The signing key is derived from the deployment's hashing secret with HKDF, so every instance
signs with the same key and there is no second secret to distribute; changing the secret
rotates it (the `kid` changes with it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ISSUER = "keygate"
_HKDF_INFO = b"keygate identity assertion v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class AssertionSigner:
    """Signs identity assertions; also publishes the matching JWKS."""

    __slots__ = ("_header", "_key", "_public", "kid", "ttl")

    def __init__(self, secret: bytes, *, ttl: float) -> None:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid = _b64(hashlib.sha256(self._public).digest()[:12])
        self.ttl = ttl
        header = {"alg": "EdDSA", "typ": "JWT", "kid": self.kid}
        self._header = _b64(json.dumps(header, separators=(",", ":")).encode())

    def sign(
        self,
        user_id: str,
        key_id: str | None,
        permissions: tuple[str, ...],
        audience: str,
        now: float | None = None,
    ) -> tuple[str, float]:
        """A compact JWT for this identity, meant for `audience`, and the time it expires."""
        issued = int(time.time() if now is None else now)
        expires = issued + int(self.ttl)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": audience,
            "sub": user_id,
            "iat": issued,
            "exp": expires,
            "permissions": list(permissions),
        }
        if key_id is not None:
            claims["key_id"] = key_id
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}".encode("ascii")
        return f"{self._header}.{payload}.{_b64(self._key.sign(signing_input))}", float(expires)

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWK Set (RFC 7517, OKP / Ed25519 per RFC 8037)."""
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64(self._public),
                    "kid": self.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }

    def __repr__(self) -> str:
        return f"AssertionSigner(kid={self.kid!r})"

"""The hashing secret's fingerprint: stable, short, distinct per secret, and not the secret."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from gateway.keys.hashing import FINGERPRINT_LEN, KeyHasher, fingerprint

_SECRET = st.binary(min_size=32, max_size=200)


@given(_SECRET)
def test_fingerprint_is_an_hmac_of_a_label_not_of_a_key(secret: bytes) -> None:
    """The fingerprint is 16 hex characters of an HMAC of a fixed label under the secret,
    the same on every call and on the hasher, and never contains the secret."""
    fp = fingerprint(secret)
    label = b"keygate hashing-secret fingerprint v1"
    assert fp == hmac.digest(secret, label, hashlib.sha256).hex()[:FINGERPRINT_LEN]
    assert len(fp) == FINGERPRINT_LEN
    assert KeyHasher(secret).fingerprint == fp


@given(_SECRET, _SECRET)
def test_different_secrets_have_different_fingerprints(a: bytes, b: bytes) -> None:
    """Two different secrets are told apart (64 bits: a collision is not expected)."""
    if a != b:
        assert fingerprint(a) != fingerprint(b)


def test_repr_shows_the_fingerprint_only() -> None:
    """repr(KeyHasher) names the secret by fingerprint, never by value."""
    secret = b"s" * 32
    text = repr(KeyHasher(secret))
    assert fingerprint(secret) in text
    assert "sss" not in text

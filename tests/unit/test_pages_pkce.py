"""PKCE S256 checks (pure)."""

from __future__ import annotations

from gateway.pages.pkce import s256, verifier_matches


def test_rfc7636_appendix_b_example() -> None:
    """The S256 challenge matches RFC 7636's worked example."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert verifier_matches("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", verifier)


def test_wrong_short_or_missing_verifiers_fail() -> None:
    """A different, malformed or absent verifier never matches."""
    challenge = s256("a" * 43)
    assert not verifier_matches(challenge, "b" * 43)
    assert not verifier_matches(challenge, "a" * 42)
    assert not verifier_matches(challenge, None)
    assert not verifier_matches(challenge, "a" * 43 + " ")

"""Key format: generation, offline validation, checksum, masking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.keys import format as kf
from gateway.keys.hashing import KeyHasher


def test_generated_key_parses_and_has_expected_shape() -> None:
    """A fresh key parses, starts with its prefix and carries its public id."""
    key = kf.generate("apk")
    parsed = kf.parse(key.text, "apk")
    assert parsed.key_id == key.key_id
    assert key.text.startswith(key.key_id)
    assert len(key.text) == 4 + kf.BODY_LEN
    assert kf.looks_like_key_id(key.key_id, "apk")


def test_secret_part_has_at_least_160_bits() -> None:
    """The random secret carries at least 160 bits of entropy."""
    import math

    assert kf.SECRET_LEN * math.log2(62) >= 160


@pytest.mark.parametrize(
    "text",
    [
        "",
        "apk_",
        "xyz_" + "A" * kf.BODY_LEN,
        "apk" + "A" * kf.BODY_LEN,
        "apk_" + "A" * (kf.BODY_LEN - 1),
        "apk_" + "é" * kf.BODY_LEN,
        "apk_" + "A" * kf.BODY_LEN,
        "x" * 10_000,
        "apk_" + "A" * kf.BODY_LEN + "\n",
    ],
)
def test_malformed_keys_rejected(text: str) -> None:
    """Wrong prefix, length, alphabet, checksum, non-ASCII, trailing newline, 10 kB: refused."""
    with pytest.raises(kf.MalformedKey):
        kf.parse(text, "apk")


def test_wrong_prefix_rejected() -> None:
    """A valid key of another deployment's prefix is refused."""
    key = kf.generate("abc")
    with pytest.raises(kf.MalformedKey) as exc:
        kf.parse(key.text, "apk")
    assert exc.value.reason == "wrong-prefix"


@given(st.text(max_size=120))
def test_random_strings_rejected(text: str) -> None:
    """Random text essentially never passes the offline checks."""
    with pytest.raises(kf.MalformedKey):
        kf.parse(text, "apk")


@settings(max_examples=50)
@given(st.data())
def test_every_single_character_corruption_rejected(data: st.DataObject) -> None:
    """Changing any one character of a valid key makes it fail the checksum or shape check."""
    key = kf.generate("apk").text
    position = data.draw(st.integers(min_value=0, max_value=len(key) - 1))
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != key[position]))
    corrupted = key[:position] + replacement + key[position + 1 :]
    with pytest.raises(kf.MalformedKey):
        kf.parse(corrupted, "apk")


def test_exhaustive_single_substitutions_of_one_key() -> None:
    """Every base62 substitution at every position of one key is refused."""
    key = kf.generate("apk").text
    for i in range(4, len(key)):
        for c in kf.ALPHABET:
            if c != key[i]:
                with pytest.raises(kf.MalformedKey):
                    kf.parse(key[:i] + c + key[i + 1 :], "apk")


def test_100k_keys_do_not_collide() -> None:
    """100,000 generated keys have distinct texts and distinct ids."""
    keys = [kf.generate("apk") for _ in range(100_000)]
    assert len({k.text for k in keys}) == 100_000
    assert len({k.key_id for k in keys}) == 100_000


def test_mask_shows_only_ends_of_the_id() -> None:
    """The masked form is prefix, three characters, stars, three characters."""
    masked = kf.mask("apk_abcdefghijklmnop")
    assert masked == "apk_abc***nop"


def test_repr_never_shows_the_secret() -> None:
    """repr() of a parsed key names the id only."""
    key = kf.generate("apk")
    assert key.text not in repr(key)


@pytest.mark.parametrize("prefix", ["", "a", "APK", "a_b", "1ab", "x" * 17])
def test_bad_prefixes_rejected(prefix: str) -> None:
    """Prefixes must be 2-16 lower-case letters/digits starting with a letter."""
    with pytest.raises(ValueError, match="prefix"):
        kf.validate_prefix(prefix)


def test_hmac_depends_on_secret_and_key() -> None:
    """The keyed hash changes with the pepper and with the key."""
    a, b = KeyHasher(b"a" * 32), KeyHasher(b"b" * 32)
    key = kf.generate().text
    assert a.digest(key) != b.digest(key)
    assert a.digest(key) == a.digest(key)
    assert len(a.digest(key)) == 32
    with pytest.raises(ValueError, match="32 bytes"):
        KeyHasher(b"short")


@pytest.mark.parametrize("pepper_len", [32, 63, 64, 65, 200])
def test_precomputed_hmac_equals_stdlib_hmac(pepper_len: int) -> None:
    """The precomputed-state HMAC gives exactly hmac.digest's result for any secret length."""
    import hashlib
    import hmac
    import os

    pepper = os.urandom(pepper_len)
    key = kf.generate().text
    assert KeyHasher(pepper).digest(key) == hmac.digest(pepper, key.encode(), hashlib.sha256)


# ---- accepted former prefixes ----------------------------------------------------------------


@given(st.sampled_from(["old", "legacy2", "ab"]), st.sampled_from(["apk", "kg", "newprefix"]))
def test_keys_with_an_accepted_prefix_parse(old: str, current: str) -> None:
    """A key made with a former prefix parses when that prefix is accepted, keeping its own
    prefix and id; without it, it is refused as wrong-prefix."""
    key = kf.generate(old)
    parsed = kf.parse(key.text, current, accepted=(old,))
    assert (parsed.prefix, parsed.key_id, parsed.text) == (old, key.key_id, key.text)
    assert kf.looks_like_key_id(key.key_id, current, (old,))
    assert not kf.looks_like_key_id(key.key_id, current)
    with pytest.raises(kf.MalformedKey) as exc:
        kf.parse(key.text, current, accepted=("other",))
    assert exc.value.reason == "wrong-prefix"


def test_accepted_prefix_still_checks_the_checksum() -> None:
    """An accepted prefix changes nothing else: a bad checksum is still refused offline."""
    key = kf.generate("old")
    broken = key.text[:-1] + ("A" if key.text[-1] != "A" else "B")
    with pytest.raises(kf.MalformedKey) as exc:
        kf.parse(broken, "apk", accepted=("old",))
    assert exc.value.reason == "bad-checksum"

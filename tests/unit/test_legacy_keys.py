"""Legacy (BTCPay-format) keys: the shape check, and that our own parser still refuses them."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.keys import format as kf

HEX = string.hexdigits  # both cases


@given(st.text(alphabet=HEX, min_size=40, max_size=40))
def test_forty_hex_characters_are_a_legacy_key(text: str) -> None:
    """Any 40 hex characters (either case) have the form of a BTCPay key."""
    assert kf.is_legacy(text)


@given(st.text(alphabet=HEX, max_size=80).filter(lambda t: len(t) != 40))
def test_other_lengths_are_not(text: str) -> None:
    """Hex of any other length is not a legacy key."""
    assert not kf.is_legacy(text)


@given(
    st.text(alphabet=HEX, min_size=39, max_size=39),
    st.characters(blacklist_characters=HEX),
    st.integers(min_value=0, max_value=39),
)
def test_one_non_hex_character_spoils_it(base: str, odd: str, at: int) -> None:
    """One character outside 0-9a-fA-F (anywhere, any script) and it is not a legacy key."""
    assert not kf.is_legacy(base[:at] + odd + base[at:])


@pytest.mark.parametrize("text", ["0" * 40, "abcdef0123" * 4])
def test_our_parser_refuses_legacy_keys(text: str) -> None:
    """`parse` (our keys) refuses them: accepting them is the verifier's choice, by setting."""
    with pytest.raises(kf.MalformedKey):
        kf.parse(text)


def test_new_key_ids_look_like_key_ids() -> None:
    """An imported key gets a public id of our usual shape, so every surface can address it."""
    key_id = kf.new_key_id("apk")
    assert kf.looks_like_key_id(key_id, "apk")
    assert key_id != kf.new_key_id("apk")

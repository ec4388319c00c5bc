"""Parsing lists of secrets (`previous_secrets`): separators, lengths, and never an echo."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.secret_list import MIN_SECRET_BYTES, SecretListError, secret_list

# Secret-like tokens: no separators or surrounding blanks, at least 32 bytes.
_TOKEN = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=","),
    min_size=MIN_SECRET_BYTES,
    max_size=80,
)


@given(st.lists(_TOKEN, max_size=5), st.sampled_from([",", "\n", " , ", "\r\n", ",\n"]))
def test_joined_text_round_trips(tokens: list[str], sep: str) -> None:
    """Secrets joined by commas or newlines come back in order, duplicates dropped."""
    expected = tuple(dict.fromkeys(t.encode() for t in tokens))
    assert secret_list("x", sep.join(tokens)) == expected
    assert secret_list("x", tokens) == expected


# Short secrets from characters the error message never contains, so finding one in it can
# only mean it was echoed (a one-digit secret would otherwise match the byte count).
_SHORT = st.text(alphabet="QXZ!@#%^*", min_size=4, max_size=MIN_SECRET_BYTES - 1)


@given(st.lists(_TOKEN, min_size=1, max_size=3), _SHORT)
def test_a_short_entry_is_refused_without_echoing_any(tokens: list[str], short: str) -> None:
    """An entry under 32 bytes is refused naming its position; no entry's text is shown."""
    with pytest.raises(SecretListError) as info:
        secret_list("GATEWAY_PREVIOUS_SECRETS", [*tokens, short])
    message = str(info.value)
    assert message.startswith("GATEWAY_PREVIOUS_SECRETS: secret ")
    for text in (*tokens, short):
        assert text not in message.removeprefix("GATEWAY_PREVIOUS_SECRETS: ")


def test_blank_and_bytes_inputs() -> None:
    """Blank text is no secrets; bytes (a secret file) are split like text."""
    assert secret_list("x", "  \n , ") == ()
    assert secret_list("x", b"k" * 32 + b"\n") == (b"k" * 32,)
    with pytest.raises(SecretListError):
        secret_list("x", {"a": 1})

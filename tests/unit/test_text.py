"""Client text with no UTF-8 form is found wherever it hides, and only there."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.text import encodable, shown, unencodable_field, unencodable_in_json

# Text as a client could send it: any code point, surrogates included.
any_text = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF))
good_text = st.text(st.characters(codec="utf-8"))
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | good_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(good_text, inner, max_size=4),
    max_leaves=20,
)


@given(any_text)
def test_encodable_agrees_with_the_utf8_encoder(text: str) -> None:
    """encodable() is True exactly when str.encode('utf-8') succeeds."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        assert not encodable(text)
    else:
        assert encodable(text)


@given(any_text)
def test_shown_is_always_encodable_and_keeps_good_text(text: str) -> None:
    """shown() can always be answered, and leaves encodable text unchanged."""
    out = shown(text)
    out.encode("utf-8")
    if encodable(text):
        assert out == text


@given(json_values)
def test_clean_json_has_no_finding(data: Any) -> None:
    """A document whose every string and member name encodes has no finding."""
    assert unencodable_in_json(data) is None


def _plant(data: Any, bad: str, choices: st.DataObject) -> tuple[Any, str]:
    """`data` with `bad` put in at a place chosen by hypothesis, and that place's path."""
    path = ""
    root: list[Any] = [data]
    holder: Any = root
    slot: Any = 0
    while True:
        node = holder[slot]
        base = path or "body"
        if isinstance(node, list) and node and choices.draw(st.booleans()):
            i = choices.draw(st.integers(0, len(node) - 1))
            holder, slot, path = node, i, f"{base}[{i}]"
        elif isinstance(node, dict) and node and choices.draw(st.booleans()):
            name = choices.draw(st.sampled_from(sorted(node)))
            holder, slot, path = node, name, f"{path}.{name}" if path else name
        else:
            break
    if choices.draw(st.booleans()) and isinstance(holder[slot], dict):
        name = "k" + bad
        holder[slot][name] = 1
        return root[0], f"{path}.{shown(name)}" if path else shown(name)
    holder[slot] = bad
    return root[0], path or "body"


@given(json_values, surrogate, st.data())
def test_a_planted_surrogate_is_found_at_its_path(data: Any, bad: str, choices: Any) -> None:
    """A lone surrogate as any value or member name is reported with that place's path."""
    planted, path = _plant(data, bad, choices)
    assert unencodable_in_json(planted) == path


def test_a_parsed_escape_is_found_however_deep() -> None:
    """Nesting as deep as the JSON parser accepts cannot exhaust the walk's stack."""
    deep = json.loads("[" * 900 + '"\\ud800"' + "]" * 900)
    assert unencodable_in_json(deep) == "body" + "[0]" * 900


@pytest.mark.parametrize(
    ("fields", "found"),
    [
        ([("email", "a@example.com"), ("password", "pw")], None),
        ([("email", "a@example.com"), ("password", "p\ud800w")], "password"),
        ([("ok", "x"), ("n\udcffame", "v")], "n\\udcffame"),
        ([("label", "\U0001f511 emoji is fine")], None),
    ],
)
def test_form_fields(fields: list[tuple[str, str]], found: str | None) -> None:
    """The first form field whose name or value has no UTF-8 form is named (safely)."""
    assert unencodable_field(fields) == found

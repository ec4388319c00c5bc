"""The request head sent upstream (gateway.proxy.h1.client.request_head): exact bytes, and no
way to smuggle a line break or NUL into it through any part."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy.h1.client import request_head


def test_head_is_the_request_line_host_and_headers_in_order() -> None:
    head = request_head("GET", "/a/b?x=1", "up:8080", [("Accept", "*/*"), ("X-Y", "z")])
    assert head == b"GET /a/b?x=1 HTTP/1.1\r\nHost: up:8080\r\nAccept: */*\r\nX-Y: z\r\n\r\n"


def test_head_without_headers() -> None:
    assert request_head("HEAD", "/", "up", []) == b"HEAD / HTTP/1.1\r\nHost: up\r\n\r\n"


def test_non_ascii_values_are_kept_byte_for_byte() -> None:
    raw = "caf\u00e9 \udcff".encode("utf-8", "surrogateescape")  # as the front decoded it
    head = request_head("GET", "/", "up", [("X-Name", raw.decode("utf-8", "surrogateescape"))])
    assert head.endswith(b"X-Name: " + raw + b"\r\n\r\n")


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\0", "a\r\nX-Gateway-User: admin"])
@pytest.mark.parametrize("where", ["name", "value", "target", "host"])
def test_line_breaks_and_nul_are_refused_anywhere(bad: str, where: str) -> None:
    parts = {"name": "X-A", "value": "v", "target": "/t", "host": "up"}
    parts[where] += bad
    with pytest.raises(ValueError, match="line break"):
        request_head("GET", parts["target"], parts["host"], [(parts["name"], parts["value"])])


TEXT = st.text(st.sampled_from("aZ0-: \t\r\n\0\x7f\u00e9"), max_size=12)


@given(target=TEXT, host=TEXT, fields=st.lists(st.tuples(TEXT, TEXT), max_size=4))
def test_refused_exactly_when_a_part_holds_cr_lf_or_nul(
    target: str, host: str, fields: list[tuple[str, str]]
) -> None:
    """Any CR, LF or NUL in any part is refused; every other head is sent as given."""
    parts = [target, host, *(text for field in fields for text in field)]
    bad = any(c in part for part in parts for c in "\r\n\0")
    try:
        head = request_head("GET", "/" + target, host, fields)
    except ValueError:
        assert bad
        return
    assert not bad
    lines = head.decode("utf-8").split("\r\n")
    assert lines[:2] == [f"GET /{target} HTTP/1.1", f"Host: {host}"]
    assert lines[2:-2] == [f"{name}: {value}" for name, value in fields]
    assert lines[-2:] == ["", ""]

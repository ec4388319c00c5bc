"""The request head sent upstream (gateway.proxy.h1.client.request_head): exact bytes, and no
way to smuggle a line break or NUL into it through any part."""

from __future__ import annotations

import pytest

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

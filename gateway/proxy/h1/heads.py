"""Response heads the server side writes: the gateway's own answers and relayed upstream
answers. Pure: values come from llhttp-checked upstream heads or from the gateway."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

Header = tuple[str, str]
Field = tuple[bytes, bytes]  # a raw header field, as an upstream sent it

_reasons: Final = {s.value: s.phrase for s in HTTPStatus}
_status_lines: Final[dict[tuple[int, bytes], bytes]] = {}  # (status, reason) -> line; a few dozen
_STATUS_LINES_MAX: Final = 256


def render_head(status: int, reason: str | None, headers: list[Header]) -> bytes:
    """A response head of the gateway's own."""
    parts = [f"HTTP/1.1 {status} {reason or _reasons.get(status, 'Unknown')}\r\n"]
    parts += ("Date: ", http_date(), "\r\n")
    for name, value in headers:
        parts += (name, ": ", value, "\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


def relayed_head(status: int, reason: bytes, fields: list[Field], extra: list[Field]) -> bytes:
    """The head of a relayed response: the upstream's status and kept fields as received
    (llhttp-checked, so no decoding is needed), then `extra`. A Date is added only when the
    upstream sent none: a message carries at most one (RFC 9110 §6.6.1)."""
    line = _status_lines.get((status, reason))
    if line is None:
        phrase = reason or _reasons.get(status, "Unknown").encode()
        line = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
        if len(_status_lines) < _STATUS_LINES_MAX:
            _status_lines[status, reason] = line
    parts = [line]
    dated = False
    for name, value in fields:
        if len(name) == 4 and name.lower() == b"date":
            dated = True
        parts += (name, b": ", value, b"\r\n")
    if not dated:
        parts += (b"Date: ", http_date().encode(), b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header value, formatted once per second."""
    global _date_cache  # a per-process cache of one string
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]

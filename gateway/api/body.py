"""Reading a JSON request body within `settings.max_body_bytes`.

The limit is enforced while reading (a declared Content-Length beyond it is refused before a
byte is read; a chunked body is counted as it arrives), so a client cannot make the gateway
buffer more than the limit. What is read must be UTF-8 JSON whose strings all have a UTF-8
form (no `\ud800` escapes left unpaired); anything else is a 422 that says what is wrong,
never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.api.schemas import EMPTY
from gateway.errors import Invalid, PayloadTooLarge
from gateway.state import SETTINGS
from gateway.text import NOT_UTF8, unencodable_in_json


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request) -> Any:
    """The decoded body, or `EMPTY` when there is none; PayloadTooLarge / Invalid otherwise."""
    raw = await read_body(request)
    if not raw.strip():
        return EMPTY
    return parse_json(raw)


async def read_body(request: web.Request) -> bytes:
    """The raw body, within the limit (PayloadTooLarge beyond it)."""
    limit = request.app[SETTINGS].max_body_bytes
    too_large = PayloadTooLarge(f"the request body may be at most {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN/Infinity) from UTF-8 bytes; Invalid naming the problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid([("body", "the body is not UTF-8 text")]) from None
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise Invalid([("body", "the body is nested too deeply")]) from None
    except ValueError as exc:
        # json's messages name a line and column, never echo the input.
        raise Invalid([("body", f"the body is not valid JSON ({exc})")]) from None
    # Strict UTF-8 decoding above refuses encoded surrogates, so only an escape can make one;
    # the walk is skipped for (nearly) every body.
    if "\\ud" in text or "\\uD" in text:
        path = unencodable_in_json(data)
        if path is not None:
            raise Invalid([(path, NOT_UTF8)])
    return data

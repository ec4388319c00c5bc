"""The errors an upstream exchange can end in, and the decoding of raw response fields.

The HTTP/1.1 framing itself is in `h1.client` (sans-IO); this tree is the I/O side's: it names
what the gateway tells its client, and `h1` protocol errors become `UpstreamProtocolError`.

Errors (every message is safe to show to the client; none carries request data)::

    UpstreamError
    ├── UpstreamTimeout        connect, pool wait, response head or next body chunk too slow  → 504
    ├── UpstreamUnreachable    refused, unresolvable, TLS failure                             → 502
    ├── UpstreamClosed         closed or reset before the response was complete               → 502
    ├── UpstreamProtocolError  a response the gateway will not relay                         → 502
    └── ClientRequestError     the client's side broke: its body ended early, bad handshake  → 400
"""

from __future__ import annotations

from gateway.proxy.headers import Field, Header


class UpstreamError(Exception):
    """The upstream exchange failed; the message is safe to show."""


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamUnreachable(UpstreamError):
    pass


class UpstreamClosed(UpstreamError):
    def __init__(self, message: str, *, before_response: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response


class UpstreamProtocolError(UpstreamError):
    pass


class ClientRequestError(UpstreamError):
    pass


def text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # rare non-UTF-8 bytes: readable, never fatal


def decode_fields(fields: list[Field]) -> list[Header]:
    """Raw header fields as text (names are tokens, so ASCII; values usually are)."""
    return [
        (name.decode("ascii"), value.decode("latin-1") if value.isascii() else text(value))
        for name, value in fields
    ]

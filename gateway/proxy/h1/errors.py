"""The HTTP/1.1 core's errors. The core names what went wrong; `gateway/errors.py` chooses
the status (`protocol_error`), as it does for every other error::

    ProtocolError                 the peer's bytes break HTTP/1.1 framing or a limit
    ├── MalformedMessage          bad syntax, bare LF, obs-fold, a missing or repeated Host  → 400
    │   └── BadChunk              a chunked body's framing is broken                          → 400
    ├── HeadTooLarge              the head, its request line or one field is over the limit   → 431
    │   └── TooManyFields         more field lines than `max_header_count`                    → 431
    └── UnsupportedVersion        HTTP/0.9, HTTP/2 or an unknown version on an HTTP/1.1 port  → 505

Messages are safe to show to the peer: they never quote its bytes.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer's bytes cannot be framed; the connection must close after the answer."""


class MalformedMessage(ProtocolError):
    pass


class BadChunk(MalformedMessage):
    pass


class HeadTooLarge(ProtocolError):
    pass


class TooManyFields(HeadTooLarge):
    pass


class UnsupportedVersion(ProtocolError):
    pass

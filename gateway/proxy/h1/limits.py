"""Every size cap of the HTTP/1.1 core, in one value with named defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what one peer may make the gateway hold. A head over a cap is refused whole."""

    max_head_bytes: int = 64 * 1024  # request line (or status line) + fields + the blank line
    max_request_line: int = 8 * 1024  # method, target and version
    max_header_line: int = 8 * 1024  # one field line, name and value
    max_header_count: int = 100  # field lines in one head (setting `max_header_count`)
    max_chunk_line: int = 4 * 1024  # a chunk-size line, extensions included
    max_trailer_bytes: int = 16 * 1024  # all trailer lines of one chunked body
    # A body left unread when its answer is complete (a refusal, an early upstream answer) is
    # read and dropped up to this many bytes so the client sees its answer; beyond, the
    # connection is closed instead. Never an unbounded drain.
    max_discard_bytes: int = 64 * 1024


DEFAULT_LIMITS = Limits()

"""The one decoder of chunked bodies (RFC 9112 §7.1), for requests and responses alike.

Strict where the RFC is: every line ends in CRLF (a bare CR or LF anywhere in the framing is
refused, never taken as a line end), the size is 1-16 hex digits, extensions are
`;name[=value]` with tokens or quoted strings, trailer lines are `name: value` without
obs-fold. Extensions and trailers are read and dropped: the gateway relays neither.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.proxy.h1.errors import BadChunk
from gateway.proxy.h1.limits import DEFAULT_LIMITS, Limits

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_EXT = rb"[ \t]*%b(?:[ \t]*=[ \t]*(?:%b|%b))?" % (_TOKEN, _TOKEN, _QUOTED)
# size, then extensions; the whole line (without its CRLF) must match. No whitespace between
# the size and the first `;`: RFC 9112 allows it there only as BWS, which no sender may
# generate, and parsers split on it differently (h11 refuses it), which is how bodies get
# smuggled past one of them.
_SIZE_LINE: Final = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;%b(?:[ \t]*;%b)*)?[ \t]*" % (_EXT, _EXT))
_TRAILER_LINE: Final = re.compile(
    rb"%b:[ \t]*[\x21-\x7e\x80-\xff]*(?:[ \t]+[\x21-\x7e\x80-\xff]+)*[ \t]*" % _TOKEN
)

_SIZE: Final = 0
_DATA: Final = 1
_DATA_END: Final = 2
_TRAILER: Final = 3


class ChunkedDecoder:
    """Incremental: `feed` bytes as they come; decoded pieces go to `out`, and once the body
    has ended (`done`) the bytes after it are returned (the next message's, if any)."""

    __slots__ = ("_limits", "_pending", "_remaining", "_state", "_trailer_bytes", "done")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._state = _SIZE
        self._remaining = 0
        self._pending = b""
        self._trailer_bytes = 0
        self.done = False

    def feed(self, data: bytes, out: list[bytes]) -> bytes:
        """Append decoded pieces to `out`; return the bytes after the body's end (if any).

        Raises BadChunk on broken framing; the decoder is then unusable."""
        buf = self._pending + data if self._pending else data
        self._pending = b""
        pos, end = 0, len(buf)
        while pos < end and not self.done:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                out.append(buf if take == end and pos == 0 else buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            if state == _DATA_END:
                if end - pos < 2:
                    if buf[pos : pos + 1] not in (b"", b"\r"):
                        raise BadChunk("malformed chunked body")
                    break
                if buf[pos] != 13 or buf[pos + 1] != 10:
                    raise BadChunk("malformed chunked body")
                pos += 2
                self._state = _SIZE
                continue
            eol = buf.find(b"\n", pos)
            limit = self._limits.max_chunk_line
            if eol < 0:
                # A line cut short is refused only once it cannot fit whole, so the outcome does
                # not depend on where the reads split it (a CR at the end may be half its CRLF).
                held = end - pos
                if state == _SIZE and held > limit + 1:
                    raise BadChunk("a chunk line is too long")
                if state == _TRAILER and held > 1 and held + 1 > self._trailer_room():
                    raise BadChunk("the trailers are too large")
                if b"\r" in buf[pos : end - 1]:  # a CR not at the very end is a bare CR
                    raise BadChunk("malformed chunked body")
                break
            if eol == pos or buf[eol - 1] != 13:
                raise BadChunk("malformed chunked body")  # a bare LF
            line, pos = buf[pos : eol - 1], eol + 1
            if state == _SIZE:
                if len(line) > limit:
                    raise BadChunk("a chunk line is too long")
                match = _SIZE_LINE.fullmatch(line)
                if match is None:
                    raise BadChunk("malformed chunked body")
                self._remaining = int(match.group(1), 16)
                self._state = _DATA if self._remaining else _TRAILER
            elif line:
                if len(line) + 2 > self._trailer_room():
                    raise BadChunk("the trailers are too large")
                self._trailer_bytes += len(line) + 2
                if _TRAILER_LINE.fullmatch(line) is None:
                    raise BadChunk("malformed trailer field")
            else:
                self.done = True
        if self.done:
            return buf[pos:]
        self._pending = buf[pos:]
        return b""

    def _trailer_room(self) -> int:
        return self._limits.max_trailer_bytes - self._trailer_bytes

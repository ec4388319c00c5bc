"""Canonicalise a raw HTTP request-target: the gateway's defence against path-confusion bypasses.

`canonicalize(request.raw_path)` runs once per request, before any check. Its output path is what
the route matcher and the key's path rule see, and exactly what the upstream receives, so the
gateway and the upstream can never disagree about which resource was asked for. Anything two
servers might read differently is rejected rather than repaired:

* only origin-form (`/path?query`): absolute-form, authority-form, `*` and fragments are refused;
* raw control characters, space, `\\`, `;` (path parameters: `..;/`), non-ASCII and anything else
  outside RFC 3986 `pchar` are refused in the path; control characters, space, non-ASCII and `#`
  are refused in the query, which is otherwise passed through verbatim;
* escapes of unreserved characters are decoded (`%41` -> `A`, `%2e` -> `.`), every other escape
  keeps its byte with upper-case hex; escapes of `/ \\ ; % ? #` and of control characters are
  refused (`%25` refusal kills double encoding such as `%252e`);
* escaped non-ASCII must be valid shortest-form UTF-8 (no overlongs like `%C0%AE`, no surrogates),
  and must not be a compatibility look-alike of ASCII (`%EF%BC%8E`, fullwidth `.`) or of a slash
  (`%E2%88%95`, U+2215), which some upstreams fold into `.`, `/` or a letter;
* empty segments (`//`) are refused anywhere, since upstreams disagree on collapsing them; a single
  trailing slash is kept, because `/x/` and `/x` may be different resources upstream;
* dot segments are removed (RFC 3986 §5.2.4); a `..` climbing above the root is refused, as are
  dot-only segments such as `...` or `.%20` that Windows-style file systems trim to `.`/`..`.

The result is idempotent: canonicalising a canonical target returns it unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final, Literal, NamedTuple

from gateway.records import maker

# Bytes of raw request-target, the same order as common server limits.
MAX_TARGET_LENGTH: Final = 8192
# Never echo more of the attacker's input than this into messages and logs.
_EXCERPT_LENGTH: Final = 60

Reason = Literal[
    "too-long",
    "empty",
    "asterisk-form",
    "absolute-form",
    "authority-form",
    "not-origin-form",
    "fragment",
    "control-char",
    "space",
    "backslash",
    "semicolon",
    "non-ascii",
    "bad-char",
    "bad-escape",
    "encoded-slash",
    "encoded-backslash",
    "encoded-semicolon",
    "encoded-percent",
    "encoded-question",
    "encoded-hash",
    "encoded-control",
    "bad-utf8",
    "encoded-lookalike",
    "empty-segment",
    "dot-segment-escape",
    "dot-segment-variant",
]

_MESSAGES: Final[dict[Reason, str]] = {
    "too-long": f"The request target is longer than {MAX_TARGET_LENGTH} bytes.",
    "empty": "The request target is empty.",
    "asterisk-form": "The asterisk-form request target '*' is not accepted.",
    "absolute-form": "Absolute-form request targets (scheme://host/...) are not accepted.",
    "authority-form": "Authority-form request targets (host:port) are not accepted.",
    "not-origin-form": "The request target must start with '/'.",
    "fragment": "The request target contains a fragment ('#').",
    "control-char": "The request target contains a raw control character.",
    "space": "The request target contains a raw space.",
    "backslash": "The request path contains a raw backslash.",
    "semicolon": "The request path contains ';' (path parameters are not accepted).",
    "non-ascii": "The request target contains raw non-ASCII characters; percent-encode them.",
    "bad-char": "The request path contains a character that must be percent-encoded.",
    "bad-escape": "The request path contains a malformed percent-escape.",
    "encoded-slash": "The request path contains an encoded slash (%2F).",
    "encoded-backslash": "The request path contains an encoded backslash (%5C).",
    "encoded-semicolon": "The request path contains an encoded semicolon (%3B).",
    "encoded-percent": "The request path contains an encoded percent sign (%25, double encoding).",
    "encoded-question": "The request path contains an encoded question mark (%3F).",
    "encoded-hash": "The request path contains an encoded hash (%23).",
    "encoded-control": "The request path contains an encoded control character.",
    "bad-utf8": "The request path contains percent-encoded bytes that are not valid UTF-8.",
    "encoded-lookalike": "The request path contains an encoded look-alike of an ASCII character.",
    "empty-segment": "The request path contains an empty segment ('//').",
    "dot-segment-escape": "The request path climbs above the root with '..'.",
    "dot-segment-variant": "The request path contains a dot-only segment other than '.' or '..'.",
}


class TargetRejected(ValueError):
    """The request-target is not one the gateway will authorise or forward.

    `reason` is a short machine code (see `Reason`); `str(exc)` is a human sentence, with at most
    a short, repr-escaped excerpt of the offending input.
    """

    reason: Reason

    def __init__(self, reason: Reason, found: str = "") -> None:
        self.reason = reason
        message = _MESSAGES[reason]
        if found:
            message = f"{message} Found: {_excerpt(found)}."
        super().__init__(message)


class CanonicalTarget(NamedTuple):
    """A canonical request-target. `path` is checked and forwarded as is; `query` is verbatim.

    A named tuple rather than a frozen dataclass: one is built per request, at a third of the
    cost, and it is just as immutable.
    """

    path: str
    query: str = ""

    @property
    def segments(self) -> tuple[str, ...]:
        """The path's segments without the leading empty one: `/a/b/` -> `("a", "b", "")`.

        The root `/` has no segments. A trailing slash shows as a final empty segment.
        """
        if self.path == "/":
            return ()
        return tuple(self.path[1:].split("/"))


# Built per request: `CanonicalTarget(...)` without its Python-level __new__ (records.py).
_target: Final = maker(CanonicalTarget)


_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# RFC 3986 pchar without ';' (path parameters are refused) and '%' (handled separately).
_PCHAR = r"A-Za-z0-9\-._~!$&'()*+,=:@"
# The common case: only plain characters, no escapes, no segment starting with '.', no '//'.
_FAST_PATH: Final = re.compile(rf"/[{_PCHAR}/]*")
_BAD_PATH_CHAR: Final = re.compile(rf"[^{_PCHAR}/%]")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE_RUN: Final = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
# Printable ASCII; '#' is refused for the whole target first.
_QUERY_OK: Final = re.compile(r"[!-~]*")
_BAD_QUERY_CHAR: Final = re.compile(r"[^!-~]")
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_DOT_LIKE: Final = re.compile(r"(?:\.|%20)+")
# Slash look-alikes that NFKC leaves alone but "best fit" code-page mappings turn into '/' or '\'.
_SLASH_LOOKALIKES: Final = frozenset("\u2044\u2215\u2216\u29f5\u29f8\u29f9")

# Escapes whose decoded byte would change how some server splits or decodes the path.
_FORBIDDEN_ESCAPES: Final[dict[int, Reason]] = {
    0x2F: "encoded-slash",
    0x5C: "encoded-backslash",
    0x3B: "encoded-semicolon",
    0x25: "encoded-percent",
    0x3F: "encoded-question",
    0x23: "encoded-hash",
    0x7F: "encoded-control",
    **dict.fromkeys(range(0x20), "encoded-control"),
}
# How each allowed ASCII escape is written in canonical form: decoded if unreserved, else %XX.
_ASCII_ESCAPES: Final[dict[int, str]] = {
    b: chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}"
    for b in range(0x80)
    if b not in _FORBIDDEN_ESCAPES
}


def canonicalize(raw_target: str) -> CanonicalTarget:
    """Canonicalise `raw_target` (the request line's target, as sent); raise `TargetRejected`."""
    if len(raw_target) > MAX_TARGET_LENGTH:
        raise TargetRejected("too-long")
    if not raw_target.startswith("/"):
        raise TargetRejected(_non_origin_reason(raw_target), raw_target)
    if "#" in raw_target:
        raise TargetRejected("fragment", raw_target)
    path, _, query = raw_target.partition("?")
    if query and not _QUERY_OK.fullmatch(query):
        _reject_char(query, _BAD_QUERY_CHAR.search(query))
    if _FAST_PATH.fullmatch(path) and "//" not in path and "/." not in path:
        return _target((path, query))
    return _target((_canonical_path(path), query))


def _non_origin_reason(target: str) -> Reason:
    if not target:
        return "empty"
    if target == "*":
        return "asterisk-form"
    scheme = _SCHEME.match(target)
    if scheme is not None:
        return "absolute-form" if target[scheme.end() :].startswith("//") else "authority-form"
    return "not-origin-form"


def _canonical_path(path: str) -> str:
    _reject_char(path, _BAD_PATH_CHAR.search(path))
    if "%" in path:
        bad = _BAD_ESCAPE.search(path)
        if bad is not None:
            raise TargetRejected("bad-escape", path[bad.start() : bad.start() + 3])
        path = _ESCAPE_RUN.sub(_normalise_escapes, path)
    return _remove_dot_segments(path)


def _reject_char(text: str, bad: re.Match[str] | None) -> None:
    """Raise for the first character `bad` points at; return when there is none."""
    if bad is None:
        return
    char = bad.group()
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        raise TargetRejected("control-char", char)
    if char == " ":
        raise TargetRejected("space")
    if char == "\\":
        raise TargetRejected("backslash", text)
    if char == ";":
        raise TargetRejected("semicolon", text)
    if code >= 0x80:
        raise TargetRejected("non-ascii", char)
    raise TargetRejected("bad-char", char)


def _normalise_escapes(run: re.Match[str]) -> str:
    """Canonical form of one run of consecutive %XX escapes (a UTF-8 sequence spans a run)."""
    data = bytes.fromhex(run.group().replace("%", ""))
    out: list[str] = []
    i = 0
    while i < len(data):
        byte = data[i]
        if byte < 0x80:
            if byte in _FORBIDDEN_ESCAPES:
                raise TargetRejected(_FORBIDDEN_ESCAPES[byte], f"%{byte:02X}")
            out.append(_ASCII_ESCAPES[byte])
            i += 1
            continue
        end = i
        while end < len(data) and data[end] >= 0x80:
            end += 1
        chunk = data[i:end]
        # Python's strict decoder refuses overlongs, surrogates, > U+10FFFF and truncation.
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise TargetRejected("bad-utf8", _escaped(chunk)) from None
        for char in text:
            _check_decoded_char(char)
        out.append(_escaped(chunk))
        i = end
    return "".join(out)


def _check_decoded_char(char: str) -> None:
    if unicodedata.category(char) == "Cc":  # C1 controls, e.g. %C2%85 (NEL)
        raise TargetRejected("encoded-control", _escaped(char.encode()))
    # Fullwidth '.', '/', '\' and letters fold to ASCII under NFKC ("best fit" on some
    # upstreams), which would turn a harmless segment into '..' or a different route.
    if char in _SLASH_LOOKALIKES or any(c < "\x80" for c in unicodedata.normalize("NFKC", char)):
        raise TargetRejected("encoded-lookalike", _escaped(char.encode()))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path, refusing empty segments and climbing above root."""
    segments = path[1:].split("/")
    last = len(segments) - 1
    out: list[str] = []
    for index, segment in enumerate(segments):
        if not segment:
            if index != last:
                raise TargetRejected("empty-segment", path)
        elif segment == ".":
            continue
        elif segment == "..":
            if not out:
                raise TargetRejected("dot-segment-escape", path)
            out.pop()
        elif "." in segment and _DOT_LIKE.fullmatch(segment):
            raise TargetRejected("dot-segment-variant", segment)
        else:
            out.append(segment)
    # A final '.' or '..' names a directory, so the result keeps a trailing slash (RFC 3986).
    trailing = segments[last] in ("", ".", "..")
    if not out:
        return "/"
    return "/" + "/".join(out) + ("/" if trailing else "")


def _escaped(data: bytes) -> str:
    return "".join(f"%{byte:02X}" for byte in data)


def _excerpt(text: str) -> str:
    if len(text) > _EXCERPT_LENGTH:
        return repr(text[:_EXCERPT_LENGTH]) + "..."
    return repr(text)

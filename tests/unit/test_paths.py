"""The request-target canonicaliser: attacks refused, canonical forms exact, properties hold."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.paths import (
    MAX_TARGET_LENGTH,
    CanonicalTarget,
    TargetRejected,
    _canonical_path,  # private on purpose: the fast path is checked against it
    canonicalize,
)

REJECTED = [
    # dot segments that climb above the root, plain and encoded in mixed case
    ("/..", "dot-segment-escape"),
    ("/../etc/passwd", "dot-segment-escape"),
    ("/api/../../admin", "dot-segment-escape"),
    ("/api/%2e%2E/%2E%2e/admin", "dot-segment-escape"),
    ("/%2e%2e/x", "dot-segment-escape"),
    ("/.%2E", "dot-segment-escape"),
    ("/a/./../..", "dot-segment-escape"),
    # dot-only variants that Windows-style servers trim to '.' or '..'
    ("/a/...", "dot-segment-variant"),
    ("/a/..%20/b", "dot-segment-variant"),
    ("/a/%2e%2e%2e/b", "dot-segment-variant"),
    # encoded delimiters
    ("/api/a%2fb", "encoded-slash"),
    ("/api/a%2Fb", "encoded-slash"),
    ("/api/..%2f..%2fadmin", "encoded-slash"),
    ("/api/a%5cb", "encoded-backslash"),
    ("/api/..%5Cadmin", "encoded-backslash"),
    ("/api/a%3bb", "encoded-semicolon"),
    ("/api/..%3B/admin", "encoded-semicolon"),
    ("/api/a%3fb", "encoded-question"),
    ("/api/a%23b", "encoded-hash"),
    # double encoding
    ("/api/%252e%252e/admin", "encoded-percent"),
    ("/api/%25", "encoded-percent"),
    # encoded control characters, NUL included, and C1 controls
    ("/api/a%00b", "encoded-control"),
    ("/api/a%0d%0aX-Injected:1", "encoded-control"),
    ("/api/a%1f", "encoded-control"),
    ("/api/a%7f", "encoded-control"),
    ("/api/a%c2%85", "encoded-control"),
    # overlong, surrogate, out-of-range, truncated and invalid UTF-8
    ("/api/%c0%ae%c0%ae/admin", "bad-utf8"),
    ("/api/%e0%80%ae", "bad-utf8"),
    ("/api/%c0%af", "bad-utf8"),
    ("/api/%e0%80%af", "bad-utf8"),
    ("/api/%f0%80%80%af", "bad-utf8"),
    ("/api/%ed%a0%80", "bad-utf8"),
    ("/api/%f4%90%80%80", "bad-utf8"),
    ("/api/%ff", "bad-utf8"),
    ("/api/%c3", "bad-utf8"),
    ("/api/%c3x", "bad-utf8"),
    ("/api/%c3%41", "bad-utf8"),
    ("/api/%a9", "bad-utf8"),
    # Unicode look-alikes that "best fit" or NFKC folding turns into '.', '/' or letters
    ("/api/%ef%bc%8e%ef%bc%8e/admin", "encoded-lookalike"),
    ("/api/a%ef%bc%8fb", "encoded-lookalike"),
    ("/api/a%e2%88%95b", "encoded-lookalike"),
    ("/api/%ef%bd%81dmin", "encoded-lookalike"),
    # malformed escapes
    ("/api/%", "bad-escape"),
    ("/api/%G1", "bad-escape"),
    ("/api/%2", "bad-escape"),
    ("/api/%2/x", "bad-escape"),
    ("/api/%%32%65", "bad-escape"),
    # path parameters: the Tomcat/Spring `..;/` bypass and session ids
    ("/api/..;/admin", "semicolon"),
    ("/api/x;jsessionid=ABC", "semicolon"),
    ("/api;/x", "semicolon"),
    # raw characters a compliant client percent-encodes
    ("/api\\..\\admin", "backslash"),
    ("/api/a\\b", "backslash"),
    ("/api/a b", "space"),
    ("/api/a\x00b", "control-char"),
    ("/api/a\tb", "control-char"),
    ("/api/a\r\nX: y", "control-char"),
    ("/api/a\x7f", "control-char"),
    ("/api/caf\u00e9", "non-ascii"),
    ("/api/\udcc3\udca9", "non-ascii"),
    ("/api/a|b", "bad-char"),
    ("/api/a<b>", "bad-char"),
    ("/api/{x}", "bad-char"),
    # fragments
    ("/api/x#frag", "fragment"),
    ("/api/x?q=1#frag", "fragment"),
    ("/#", "fragment"),
    # empty segments, including the scheme-relative `//host`
    ("//evil.com/x", "empty-segment"),
    ("//", "empty-segment"),
    ("/api//admin", "empty-segment"),
    ("/api/x//", "empty-segment"),
    ("/api/.//x", "empty-segment"),
    # request-target forms other than origin-form
    ("http://other/x", "absolute-form"),
    ("HTTPS://other:443/x?y", "absolute-form"),
    ("other.example:443", "authority-form"),
    ("*", "asterisk-form"),
    ("", "empty"),
    ("api/x", "not-origin-form"),
    ("?x=1", "not-origin-form"),
    (" /api/x", "not-origin-form"),
    ("\\api\\x", "not-origin-form"),
    # query still refuses control characters, space and non-ASCII
    ("/api/x?a=b c", "space"),
    ("/api/x?a=\x00", "control-char"),
    ("/api/x?a=\r\nX: y", "control-char"),
    ("/api/x?a=caf\u00e9", "non-ascii"),
    # size
    ("/" + "a" * 10_000, "too-long"),
    ("/x?" + "q" * MAX_TARGET_LENGTH, "too-long"),
]


@pytest.mark.parametrize(("target", "reason"), REJECTED)
def test_attack_targets_are_rejected_with_reason(target: str, reason: str) -> None:
    """Each known bypass or malformed target is refused with its machine-readable reason."""
    with pytest.raises(TargetRejected) as info:
        canonicalize(target)
    assert info.value.reason == reason


ACCEPTED = [
    ("/", "/", ""),
    ("/api/v1/stores/S1/invoices", "/api/v1/stores/S1/invoices", ""),
    ("/a/./b", "/a/b", ""),
    ("/a/b/../c", "/a/c", ""),
    ("/a/b/./../c/.", "/a/c/", ""),
    ("/a/b/..", "/a/", ""),
    ("/a/..", "/", ""),
    ("/.", "/", ""),
    ("/./", "/", ""),
    ("/a/%2e/b", "/a/b", ""),
    ("/a/b/%2E%2e/c", "/a/c", ""),
    ("/%41%7e", "/A~", ""),
    ("/%61%2D%5f%2e%30", "/a-_.0", ""),
    ("/caf%c3%a9", "/caf%C3%A9", ""),
    ("/%e6%97%a5%e6%9c%ac", "/%E6%97%A5%E6%9C%AC", ""),
    ("/%f0%9f%94%91", "/%F0%9F%94%91", ""),
    ("/a%20b", "/a%20b", ""),
    ("/a%3ab%40c", "/a%3Ab%40c", ""),
    ("/a%7cb", "/a%7Cb", ""),
    ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,=", ""),
    ("/a/", "/a/", ""),
    ("/a/b/", "/a/b/", ""),
    ("/a.b/c.", "/a.b/c.", ""),
    ("/.well-known/jwks.json", "/.well-known/jwks.json", ""),
    ("/x?a=1&b=%2f&c=%zz", "/x", "a=1&b=%2f&c=%zz"),
    ("/x?a=../..;\\/", "/x", "a=../..;\\/"),
    ("/x?a=1?b=2", "/x", "a=1?b=2"),
    ("/x?", "/x", ""),
    ("/a/../b?q=%2e%2e", "/b", "q=%2e%2e"),
    ("/" + "a" * (MAX_TARGET_LENGTH - 1), "/" + "a" * (MAX_TARGET_LENGTH - 1), ""),
]


@pytest.mark.parametrize(("target", "path", "query"), ACCEPTED)
def test_accepted_targets_have_exact_canonical_form(target: str, path: str, query: str) -> None:
    """Accepted targets canonicalise to exactly the expected path; the query is verbatim."""
    assert canonicalize(target) == CanonicalTarget(path, query)


@pytest.mark.parametrize(
    ("path", "segments"),
    [("/", ()), ("/a", ("a",)), ("/a/b", ("a", "b")), ("/a/", ("a", ""))],
)
def test_segments_split_the_path(path: str, segments: tuple[str, ...]) -> None:
    """`segments` drops the leading empty segment; a trailing slash is a final empty one."""
    assert CanonicalTarget(path).segments == segments


def test_rejection_message_is_a_bounded_sentence() -> None:
    """The message names the problem but echoes only a short, escaped excerpt of the input."""
    with pytest.raises(TargetRejected) as info:
        canonicalize("/" + "\\" * 5000)
    message = str(info.value)
    assert "backslash" in message
    assert len(message) < 200


def test_rejection_is_a_value_error() -> None:
    """Callers that catch ValueError also catch rejections."""
    with pytest.raises(ValueError, match="encoded slash"):
        canonicalize("/a%2fb")


# Pieces that exercise every branch: plain, dot and encoded-dot segments, escapes of unreserved,
# reserved and non-ASCII bytes (mostly accepted), then forbidden escapes, malformed escapes and raw
# characters of each refused class. Safe pieces are drawn seven times as often as risky ones.
_SAFE_PIECES = [
        "a", "B", "0", "-", "_", "~", ".", "..", "%2e", "%2E", "%2e%2E", ".%2e", "%41", "%7e",
        "%7E", "%20", "%3a", "%3A", "%40", "%c3%a9", "%C3%A9", "%e2%82%ac", ":", "@", "!", "$",
        "'", "(", "*", ",", "=",
]  # fmt: skip
_RISKY_PIECES = [
        "...", "%2f", "%5c", "%3b", "%25", "%3f", "%23", "%00", "%c0%ae", "%ff", "%", "%g1",
        ";", "\\", " ", "\t", "\u00e9", "|", "%ef%bc%8e",
]  # fmt: skip
_PIECES = st.sampled_from(_SAFE_PIECES * 7 + _RISKY_PIECES)
_QUERIES = st.sampled_from(["", "", "?", "?a=1", "?a=%2f&b=..", "?a=b?c", "?x y", "?\u00e9"])


@st.composite
def _targets(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.lists(_PIECES, min_size=1, max_size=3).map("".join), max_size=5))
    empty = draw(st.sampled_from(["", "", "", "/", "//"]))  # trailing slash, or an empty segment
    return "/" + "/".join(segments) + empty + draw(_QUERIES)


_LOWER_HEX_ESCAPE = re.compile(r"%(?:[0-9A-F][a-f]|[a-f][0-9A-Fa-f])")


def _accepted(target: str) -> CanonicalTarget | None:
    try:
        return canonicalize(target)
    except TargetRejected:
        return None


@given(_targets())
def test_canonicalize_is_idempotent(target: str) -> None:
    """Canonicalising a canonical target returns it unchanged."""
    first = _accepted(target)
    if first is None:
        return
    again = first.path + ("?" + first.query if first.query else "")
    assert canonicalize(again) == first


@given(st.one_of(_targets(), st.text(max_size=40).map(lambda s: "/" + s)))
def test_canonical_paths_are_clean(target: str) -> None:
    """Accepted paths start with '/' and hold no dot segment, '//', '\\' or lower-case hex."""
    result = _accepted(target)
    if result is None:
        return
    assert result.path.startswith("/")
    assert "//" not in result.path
    assert "\\" not in result.path
    assert not _LOWER_HEX_ESCAPE.search(result.path)
    assert not {".", ".."} & set(result.segments)
    assert result.path.isascii()


@given(st.one_of(st.text(), _targets()))
def test_arbitrary_text_is_accepted_or_rejected_cleanly(target: str) -> None:
    """Any input either canonicalises or raises TargetRejected, never another exception."""
    try:
        outcome: CanonicalTarget | str = canonicalize(target)
    except TargetRejected as exc:
        outcome = str(exc)
    if isinstance(outcome, str):
        assert len(outcome) < 300  # the message echoes only a bounded excerpt
    else:
        assert outcome.path.startswith("/")


@given(st.text(alphabet="ab.~:@!$&'()*+,=/", max_size=30).map(lambda s: "/" + s))
def test_fast_path_agrees_with_full_algorithm(target: str) -> None:
    """The plain-character fast path gives the same result as the full canonicaliser."""
    expected = _accepted(target)
    try:
        full = _canonical_path(target)
    except TargetRejected:
        assert expected is None
    else:
        assert expected == CanonicalTarget(full)

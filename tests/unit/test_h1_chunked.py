"""The one chunked decoder (gateway.proxy.h1.chunked): strict framing, extensions and trailers
read and dropped, limits, and the bytes after the body returned exactly, however it is split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.h1.chunked import ChunkedDecoder
from gateway.proxy.h1.errors import BadChunk
from gateway.proxy.h1.limits import DEFAULT_LIMITS, Limits


def decode(pieces: list[bytes], limits: Limits = DEFAULT_LIMITS) -> tuple[bytes, bytes, bool]:
    """Feed `pieces` one by one: (the body, the bytes after it, done)."""
    decoder = ChunkedDecoder(limits)
    out: list[bytes] = []
    rest = b""
    for piece in pieces:
        rest += decoder.feed(piece, out)
    return b"".join(out), rest, decoder.done


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


VALID = [
    (b"0\r\n\r\n", b""),
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"0005\r\nhello\r\n0000\r\n\r\n", b"hello"),
    (b"000000000000000\r\n\r\n", b""),  # 16 digits are allowed, leading zeros too
    (b"5;a\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;a=b\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b'5;a="b c;d"\r\nhello\r\n0\r\n\r\n', b"hello"),
    (b'5;a="q\\"x"\r\nhello\r\n0\r\n\r\n', b"hello"),
    (b"5; a = b ;c\r\nhello\r\n0\r\n\r\n", b"hello"),  # BWS around = and later ;
    (b"5;\ta\t\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5 \r\nhello\r\n0\t\r\n\r\n", b"hello"),  # trailing whitespace
    (b"5\r\nhello\r\n0;last\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n0\r\nX-T: v\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n0\r\nX-T: v w\r\nY:\r\n\r\n", b"hello"),
    (b"5\r\nhe\r\nl\r\n0\r\n\r\n", b"he\r\nl"),  # data is opaque: CR and LF in it are data
]


@pytest.mark.parametrize(("wire", "body"), VALID)
def test_valid_bodies_decode_whole_and_byte_by_byte(wire: bytes, body: bytes) -> None:
    """A valid chunked body decodes to its data, fed whole or one byte at a time."""
    assert decode([wire]) == (body, b"", True)
    assert decode(bytewise(wire)) == (body, b"", True)


INVALID = [
    b"5\nhello\r\n0\r\n\r\n",  # bare LF ends the size line
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",  # bare LF inside the extensions
    b"5\rhello\r\n0\r\n\r\n",  # bare CR
    b"5\r\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\n0\r\n\r\n",  # bare LF after the data
    b"5\r\nhelloX\r\n0\r\n\r\n",  # data longer than its size
    b"5\r\nhello0\r\n\r\n",  # no CRLF after the data
    b"\r\nhello\r\n0\r\n\r\n",  # no size
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"g\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"10000000000000000\r\n",  # 17 digits: would overflow 64 bits
    b"00000000000000000\r\n\r\n",  # 17 digits, even zeros
    b"5;\r\nhello\r\n0\r\n\r\n",  # an extension without a name
    b"5;a b\r\nhello\r\n0\r\n\r\n",
    b"5;a=\r\nhello\r\n0\r\n\r\n",
    b'5;a="unterminated\r\nhello\r\n0\r\n\r\n',
    b"5;a=b\x00\r\nhello\r\n0\r\n\r\n",
    b"5 5\r\nhello\r\n0\r\n\r\n",
    b"5 ;a\r\nhello\r\n0\r\n\r\n",  # whitespace between the size and the first ;
    b"5\t;a\r\nhello\r\n0\r\n\r\n",
    b"0\r\nX-T v\r\n\r\n",  # a trailer without a colon
    b"0\r\nX-T: v\r\n w\r\n\r\n",  # obs-fold in the trailers
    b"0\r\n: v\r\n\r\n",
    b"0\r\nX T: v\r\n\r\n",
    b"0\r\nX-T: v\n\r\n",  # bare LF ends a trailer
    b"0\r\nX-T: a\rb\r\n\r\n",
    b"0\r\n\n",  # bare LF as the last line
]


@pytest.mark.parametrize("wire", INVALID)
def test_broken_framing_is_refused_whole_and_byte_by_byte(wire: bytes) -> None:
    """Broken framing raises BadChunk, whether it arrives whole or one byte at a time."""
    with pytest.raises(BadChunk):
        decode([wire])
    with pytest.raises(BadChunk):
        decode(bytewise(wire))


@pytest.mark.parametrize(
    "wire", [b"5", b"5;a", b"5\r\nhel", b"5\r\nhello\r", b"0\r\nX: y\r\n", b"0\r\n\r", b"ff\r"]
)
def test_a_body_cut_short_waits_for_more(wire: bytes) -> None:
    """A valid prefix is neither an error nor the end: the decoder waits for more."""
    assert decode([wire])[1:] == (b"", False)
    assert decode(bytewise(wire))[1:] == (b"", False)


def test_the_bytes_after_the_end_are_returned_exactly() -> None:
    """The bytes after the final CRLF belong to the next message and come back untouched."""
    after = b"GET / HTTP/1.1\r\n\r\n\r\n0\r\n"
    assert decode([b"3\r\nabc\r\n0\r\n\r\n" + after]) == (b"abc", after, True)
    decoder = ChunkedDecoder()
    assert decoder.feed(b"0\r\n\r\n", []) == b""
    assert decoder.done
    assert decoder.feed(after, []) == after  # once done, everything is "after"


def test_chunk_line_limit_is_exact_and_split_invariant() -> None:
    """A size line of exactly max_chunk_line bytes passes and one more byte fails, wherever the
    reads split it (a trailing CR held alone is not counted as part of the line)."""
    limits = Limits(max_chunk_line=16)
    fits = b"1;" + b"a" * 14  # 16 bytes
    wire = fits + b"\r\nx\r\n0\r\n\r\n"
    assert decode([wire], limits)[0] == b"x"
    assert decode([fits + b"\r", b"\nx\r\n0\r\n\r\n"], limits)[0] == b"x"
    assert decode(bytewise(wire), limits)[0] == b"x"
    over = b"1;" + b"a" * 15
    for pieces in ([over + b"\r\nx\r\n0\r\n\r\n"], bytewise(over + b"\r\n"), [over + b"a"]):
        with pytest.raises(BadChunk):
            decode(pieces, limits)


def test_trailer_limit_is_exact_and_split_invariant() -> None:
    """Trailers may total max_trailer_bytes (lines with their CRLF), however they are split;
    one byte more fails. A long trailer line is not held to the chunk-line limit."""
    limits = Limits(max_chunk_line=8, max_trailer_bytes=32)
    trailers = b"X-A: " + b"v" * 11 + b"\r\n" + b"Y: " + b"w" * 11 + b"\r\n"  # 18 + 16 = 34
    fits = b"0\r\n" + trailers[:-4] + b"\r\n\r\n"  # 32 bytes of trailers
    assert decode([fits], limits) == (b"", b"", True)
    assert decode(bytewise(fits), limits) == (b"", b"", True)
    over = b"0\r\n" + trailers[:-3] + b"\r\n\r\n"
    with pytest.raises(BadChunk):
        decode([over], limits)
    with pytest.raises(BadChunk):
        decode(bytewise(over), limits)


def test_a_huge_chunk_size_is_a_number_not_an_allocation() -> None:
    """The largest 16-digit size is accepted and its data is simply awaited."""
    assert decode([b"ffffffffffffffff\r\nabc"]) == (b"abc", b"", False)


# -- properties ----------------------------------------------------------------------------

_token = st.text("abcXYZ019!#$%&'*+.^_`|~-", min_size=1, max_size=6).map(str.encode)
_quoted = st.binary(max_size=6).map(
    lambda b: b'"' + bytes(c for c in b if c not in b'"\\\r\n\x7f' and c >= 0x20) + b'"'
)
_ows = st.sampled_from([b"", b" ", b"\t", b" \t"])
_extension = st.builds(
    lambda ows1, name, value, ows2: b";%b%b%b%b" % (ows1, name, value, ows2),
    _ows,
    _token,
    st.one_of(st.just(b""), st.builds(lambda v: b"=" + v, st.one_of(_token, _quoted))),
    _ows,
)
_chunk = st.tuples(
    st.binary(min_size=1, max_size=40),
    st.lists(_extension, max_size=2).map(b"".join),
    st.sampled_from(["x", "X", "0x"]),
)
_trailer = st.builds(
    lambda name, value: b"%b: %b\r\n" % (name, value),
    _token,
    st.binary(max_size=10).map(lambda b: bytes(c for c in b if c > 0x20 and c != 0x7F)),
)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(wire, body): random chunk sizes, hex case, leading zeros, extensions and trailers."""
    chunks = draw(st.lists(_chunk, max_size=5))
    wire, body = [], b""
    for data, ext, form in chunks:
        size = format(len(data), "x" if form != "X" else "X")
        wire.append(
            b"%b%b\r\n%b\r\n" % (("0" + size if form == "0x" else size).encode(), ext, data)
        )
        body += data
    wire.append(b"0" + draw(st.lists(_extension, max_size=2).map(b"".join)) + b"\r\n")
    wire += draw(st.lists(_trailer, max_size=3))
    wire.append(b"\r\n")
    return b"".join(wire), body


@settings(max_examples=300, deadline=None)
@given(chunked_bodies(), st.binary(max_size=20), st.lists(st.integers(0, 10_000), max_size=8))
def test_any_split_decodes_the_same(
    case: tuple[bytes, bytes], after: bytes, cuts: list[int]
) -> None:
    """Generated bodies decode to their data, and the bytes after, however the stream is split."""
    wire, body = case
    assert decode([wire + after]) == (body, after, True)
    assert decode(splits(wire + after, cuts)) == (body, after, True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.lists(st.integers(0, 10_000), max_size=6))
def test_garbage_only_ever_raises_bad_chunk(data: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes end, wait or raise BadChunk, never another error; a split changes
    nothing of it."""
    limits = Limits(max_chunk_line=20, max_trailer_bytes=30)
    try:
        whole: object = decode([data], limits)
    except BadChunk:
        whole = BadChunk
    try:
        split: object = decode(splits(data, cuts), limits)
    except BadChunk:
        split = BadChunk
    assert whole == split

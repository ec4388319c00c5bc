"""The client side of HTTP/1.1 (gateway.proxy.h1.client), with no sockets: framing, interim
answers, EOF, reuse, malformed heads and limits, as tables and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy.h1.client import END, ClientMachine, ClosedEarly, Event, Head
from gateway.proxy.h1.errors import BadChunk, HeadTooLarge, MalformedMessage
from gateway.proxy.h1.limits import Limits


def started(method: str = "GET", **kw: object) -> ClientMachine:
    machine = ClientMachine(**kw)  # type: ignore[arg-type]  # limits only
    machine.start(method, "/", "up", [])
    return machine


def flat(events: list[Event]) -> tuple[list[Head], bytes, bool]:
    """Heads, the body joined, and whether END came (last)."""
    heads = [e for e in events if isinstance(e, Head)]
    body = b"".join(e for e in events if isinstance(e, bytes))
    ended = bool(events) and events[-1] is END
    assert sum(1 for e in events if e is END) == int(ended)
    return heads, body, ended


def feed(machine: ClientMachine, pieces: list[bytes], eof: bool = False) -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        events += machine.receive(piece)
    if eof:
        events += machine.receive_eof()
    return events


def _close_delimited(raw: bytes) -> bool:
    return b"Content-Length" not in raw and b"chunked" not in raw and b" 204 " not in raw


# Response bytes, the body the client should see, and whether the connection stays reusable.
FRAMINGS = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET", b"hello", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", b"", True),
    (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n"
        b"T: v\r\n\r\n",
        "GET",
        b"hello!",
        True,
    ),
    (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", "GET", b"until the end", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", b"", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", "GET", b"", True),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "GET", b"", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", "GET", b"ok", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", b"ok", False),
    (
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
        "GET",
        b"ok",
        True,
    ),
    (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        "GET",
        b"x",
        True,
    ),
    (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\n"
        b"Content-Length: 0\r\n\r\n",
        "POST",
        b"",
        True,
    ),
]


@pytest.mark.parametrize(("raw", "method", "body", "reusable"), FRAMINGS)
def test_every_framing_gives_one_head_the_body_and_end(
    raw: bytes, method: str, body: bytes, reusable: bool
) -> None:
    """Each framing (length, chunked, until close, none for HEAD/204/304, after 1xx) yields
    one final head, exactly its body, END, and the right reuse verdict."""
    machine = started(method)
    heads, got, ended = flat(feed(machine, [raw], eof=_close_delimited(raw)))
    assert len(heads) == 1
    assert heads[0].status >= 200
    assert got == body
    assert ended
    assert machine.reusable is reusable


@pytest.mark.parametrize(("raw", "method", "body", "reusable"), FRAMINGS)
@given(st.data())
def test_any_split_of_the_bytes_gives_the_same_events(
    raw: bytes, method: str, body: bytes, reusable: bool, data: st.DataObject
) -> None:
    """However the upstream's bytes are split into reads, the head, body, END and reuse
    verdict are the same."""
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(raw) - 1)), max_size=8)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    close = _close_delimited(raw)
    whole = started(method)
    split = started(method)
    one = flat(feed(whole, [raw], eof=close))
    many = flat(feed(split, [p for p in pieces if p], eof=close))
    assert one == many
    assert many[1] == body
    assert whole.reusable == split.reusable == reusable


@given(st.binary(max_size=3000), st.lists(st.integers(1, 500), max_size=6))
def test_chunked_bodies_round_trip(body: bytes, sizes: list[int]) -> None:
    """A body sent in any chunk sizes comes out byte for byte, then END."""
    wire, pos = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0
    for size in [*sizes, len(body)]:
        piece = body[pos : pos + size]
        if piece:
            wire += b"%x\r\n%b\r\n" % (len(piece), piece)
        pos += size
    wire += b"0\r\n\r\n"
    machine = started()
    _, got, ended = flat(feed(machine, [wire[i : i + 7] for i in range(0, len(wire), 7)]))
    assert got == body
    assert ended
    assert machine.reusable


def test_bytes_after_the_answer_spoil_reuse() -> None:
    """Bytes beyond the announced length, after END or while idle make the connection unfit."""
    extra = started()
    feed(extra, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX"])
    assert not extra.reusable
    later = started()
    feed(later, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"junk"])
    assert not later.reusable
    idle = ClientMachine()
    assert idle.receive(b"HTTP/1.1 200 OK\r\n\r\n") == []
    assert not idle.reusable


def test_an_unfinished_exchange_is_not_reusable() -> None:
    """Until both the response and the request body are complete, no next request."""
    machine = ClientMachine()
    head = machine.start("POST", "/", "up", [], length=4)
    assert head.endswith(b"Content-Length: 4\r\n\r\n")
    feed(machine, [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    assert machine.answered
    assert not machine.reusable
    assert machine.data(b"abcd") == (b"abcd",)
    assert machine.end() == b""
    assert machine.reusable
    with pytest.raises(RuntimeError):
        started().start("GET", "/", "up", [])


def test_request_bodies_are_framed_by_length_or_chunked() -> None:
    """Chunked pieces are framed (an empty piece is nothing, never the last chunk); a length
    body may not run over or under."""
    machine = ClientMachine()
    assert machine.start("PUT", "/", "h", [], chunked=True).endswith(
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    assert machine.data(b"") == ()
    assert b"".join(machine.data(b"abc")) == b"3\r\nabc\r\n"
    assert machine.end() == b"0\r\n\r\n"
    over = ClientMachine()
    over.start("PUT", "/", "h", [], length=2)
    with pytest.raises(ValueError, match="more"):
        over.data(b"abc")
    under = ClientMachine()
    under.start("PUT", "/", "h", [], length=2)
    under.data(b"a")
    with pytest.raises(ValueError, match="ended"):
        under.end()


@pytest.mark.parametrize(
    ("pieces", "before"),
    [
        ([], True),
        ([b"HTTP/1.1 200"], False),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab"], False),
    ],
)
def test_eof_before_the_end_is_closed_early(pieces: list[bytes], before: bool) -> None:
    """EOF while an answer is due or under way raises ClosedEarly, saying whether any byte of
    an answer came (only then may a stale connection's request be sent again)."""
    machine = started()
    feed(machine, pieces)
    with pytest.raises(ClosedEarly) as caught:
        machine.receive_eof()
    assert caught.value.before_response is before
    assert not machine.reusable


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        b"HTTP/1.1 200 OK\nX: a\r\n\r\n",
        b"HTTP/1.1 99 Odd\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
    ],
)
def test_malformed_heads_are_refused(raw: bytes) -> None:
    """Ambiguous framing, other codings, obs-fold, bad syntax and an unasked 101 are refused,
    and the connection is spent."""
    machine = started()
    with pytest.raises(MalformedMessage):
        machine.receive(raw)
    assert not machine.reusable
    assert machine.receive(b"more") == []


@pytest.mark.parametrize(
    "body", [b"5\r\nhelloXX", b"zz\r\n", b"5\nhello\r\n", b"1\r\nx\r\n0\r\nbad trailer\r\n\r\n"]
)
def test_broken_chunks_are_refused(body: bytes) -> None:
    """The shared strict decoder refuses broken chunked framing in a response."""
    machine = started()
    with pytest.raises(BadChunk):
        feed(machine, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body])
    assert not machine.reusable


def test_limits_bound_the_head_chunk_lines_and_trailers() -> None:
    """A head over max_head_bytes (whole or in pieces), a long chunk line and large trailers
    are refused."""
    limits = Limits(max_head_bytes=100, max_chunk_line=10, max_trailer_bytes=20)
    big = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100 + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(HeadTooLarge):
        started(limits=limits).receive(big)
    pieces = started(limits=limits)
    with pytest.raises(HeadTooLarge):
        feed(pieces, [big[i : i + 30] for i in range(0, len(big), 30)])
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    with pytest.raises(BadChunk):
        started(limits=limits).receive(chunked + b"1;" + b"x" * 20 + b"\r\n")
    with pytest.raises(BadChunk):
        started(limits=limits).receive(chunked + b"0\r\nA: " + b"b" * 30 + b"\r\n\r\n")


def test_head_keeps_raw_reason_and_fields_in_order() -> None:
    """The head event carries the raw reason and raw fields, in order, and the length."""
    machine = started()
    events = machine.receive(b"HTTP/1.1 404 Nicht Gefunden\r\nB: 1\r\na: 2\r\n\r\n")
    assert len(events) == 1  # close-delimited: the body follows until EOF
    head = events[0]
    assert isinstance(head, Head)
    assert head.status == 404
    assert head.reason == b"Nicht Gefunden"
    assert head.fields == [(b"B", b"1"), (b"a", b"2")]
    assert head.framing == "close"
    assert not head.keep_alive

"""The slow-client benchmark's pure helpers (bench.lifetimes): endings and lifetime summaries."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from bench.lifetimes import (
    OTHER_BYTES,
    PLAIN_CLOSE,
    RESET,
    STILL_OPEN,
    Ended,
    ending,
    summarise,
)

KINDS = st.sampled_from(["idle", "trickling"])
HOWS = st.sampled_from(["408 answer", "400 answer", PLAIN_CLOSE, RESET, STILL_OPEN])
RECORDS = st.lists(
    st.builds(Ended, KINDS, st.floats(min_value=0, max_value=1e4, allow_nan=False), HOWS),
    max_size=50,
)


@given(st.integers(min_value=100, max_value=599), st.sampled_from(["0", "1"]), st.booleans())
def test_an_answer_is_named_by_its_status(status: int, minor: str, reset: bool) -> None:
    """Bytes that start with a status line name the answer by its code, reset or not."""
    head = f"HTTP/1.{minor} {status} Whatever\r\nConnection: close\r\n\r\n".encode()
    assert ending(head, reset) == f"{status} answer"


def test_no_bytes_is_a_plain_close_or_a_reset() -> None:
    """A connection ended without a byte is a plain close, or a reset when the peer reset it."""
    assert ending(b"", reset=False) == PLAIN_CLOSE
    assert ending(b"", reset=True) == RESET


@given(st.binary(min_size=1, max_size=64).filter(lambda b: not b.startswith(b"HTTP/1.")))
def test_other_bytes_are_not_taken_for_an_answer(data: bytes) -> None:
    """Bytes that are not a status line are reported as such, never as an answer."""
    assert ending(data, reset=False) == OTHER_BYTES


@given(RECORDS, KINDS)
def test_summary_accounts_for_every_connection(records: list[Ended], kind: str) -> None:
    """Every connection of the kind is either ended or still open, and every ending is counted."""
    summary = summarise(kind, records)
    mine = [r for r in records if r.kind == kind]
    assert summary.opened == len(mine) == summary.ended + summary.still_open
    assert sum(count for _, count in summary.how) == len(mine)
    assert dict(summary.how).get(STILL_OPEN, 0) == summary.still_open


@given(RECORDS, KINDS)
def test_lifetimes_cover_only_ended_connections(records: list[Ended], kind: str) -> None:
    """Min, median and max are over the connections the gateway ended; none when none was."""
    summary = summarise(kind, records)
    ended = [r.seconds for r in records if r.kind == kind and r.how != STILL_OPEN]
    if not ended:
        assert summary.shortest is summary.median is summary.longest is None
        return
    assert summary.shortest == min(ended)
    assert summary.longest == max(ended)
    assert summary.median == statistics.median(ended)


def test_endings_are_listed_most_frequent_first() -> None:
    """The endings column lists the commonest ending first, ties by name."""
    records = [Ended("idle", 1.0, PLAIN_CLOSE)] + [Ended("idle", 9.0, STILL_OPEN)] * 2
    records += [Ended("idle", 2.0, RESET)]
    assert summarise("idle", records).how == ((STILL_OPEN, 2), (PLAIN_CLOSE, 1), (RESET, 1))

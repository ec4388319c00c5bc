"""How the slow-client scenario's bad connections ended, and their lifetimes summed up. Pure.

A bad connection's lifetime runs from its connect to the moment the client saw the gateway end
it (end of stream or a reset); one the gateway never ended is `STILL_OPEN` when the run stops.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

STILL_OPEN = "still open"
PLAIN_CLOSE = "plain close"
RESET = "reset"
OTHER_BYTES = "bytes that are not an answer"

_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: |\r|\n|$)")


def ending(first_bytes: bytes, reset: bool) -> str:
    """How the gateway ended a connection, from the first bytes it sent on it (if any)."""
    if first_bytes:
        status = _STATUS.match(first_bytes)
        return f"{status.group(1).decode()} answer" if status else OTHER_BYTES
    return RESET if reset else PLAIN_CLOSE


@dataclass(frozen=True, slots=True)
class Ended:
    """One bad connection: its kind (idle, trickling), lifetime in seconds, how it ended."""

    kind: str
    seconds: float
    how: str


@dataclass(frozen=True, slots=True)
class Summary:
    """The bad connections of one kind. Lifetimes cover only those the gateway ended."""

    kind: str
    opened: int
    ended: int
    still_open: int
    shortest: float | None
    median: float | None
    longest: float | None
    how: tuple[tuple[str, int], ...]  # (ending, count), most frequent first


def summarise(kind: str, records: Iterable[Ended]) -> Summary:
    mine = [r for r in records if r.kind == kind]
    lifetimes = sorted(r.seconds for r in mine if r.how != STILL_OPEN)
    counts = Counter(r.how for r in mine)
    return Summary(
        kind=kind,
        opened=len(mine),
        ended=len(lifetimes),
        still_open=counts[STILL_OPEN],
        shortest=lifetimes[0] if lifetimes else None,
        median=statistics.median(lifetimes) if lifetimes else None,
        longest=lifetimes[-1] if lifetimes else None,
        how=tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
    )

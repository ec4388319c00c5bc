"""Holding the data plane's small writes until the end of the event loop's pass.

On a busy gateway one pass of the event loop serves many requests: each sends its head to an
upstream and, a pass later, its answer to a client. Written at once, every `send()` may have to
wake the process at the other end (an upstream worker, a client) that went idle since the
previous one — and on a virtual machine waking another CPU is one of the dearest things a
system call can do. Held until the pass ends and then sent back to back, the first `send()`
wakes the peer and the rest find it busy. Measured here this served about 15% more requests per
second through the fast front, at no cost in latency: nothing waits longer than the pass.

Only writes with nothing behind them are held: a request head without a body, a complete small
answer. A holder (`Held`) keeps its own bytes and must `flush()` before any other write or
close on the same transport, so the order on a connection never changes.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Final, Protocol


class Held(Protocol):
    """Something with writes held in the outbox: sends them when asked."""

    def flush(self) -> None: ...


class Outbox:
    """One per event loop: the holders to flush when the current pass ends."""

    __slots__ = ("_holders", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._holders: list[Held] = []

    def hold(self, holder: Held) -> None:
        """Flush `holder` at the end of this pass (call once per batch of held writes)."""
        if not self._holders:
            # Runs after the callbacks already queued: every request of this pass has written.
            self._loop.call_soon(self._flush)
        self._holders.append(holder)

    def _flush(self) -> None:
        holders, self._holders = self._holders, []
        for holder in holders:
            holder.flush()


_outboxes: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Outbox]] = (
    weakref.WeakKeyDictionary()
)


def outbox(loop: asyncio.AbstractEventLoop) -> Outbox:
    """The outbox of `loop`."""
    box = _outboxes.get(loop)
    if box is None:
        box = _outboxes[loop] = Outbox(loop)
    return box

"""Setting `busy_poll_us`: a worker that keeps polling for a short while after each request
instead of going to sleep at once.

At low load a worker's loop sleeps twice per request: while the request is upstream, and
between an answer and the client's next request. Waking a sleeping CPU (a halted virtual CPU
above all) and working through its cold caches then cost more than the request itself: one
worker's CPU time per request is several times higher at one connection than at fifty, and the
latency it adds grows with it. `BusyPoll` keeps the loop turning, each turn an epoll call that
does not wait, until a window passes with no request begun or answered; then the loop sleeps
as before and the next request starts it again.

What it costs: up to the window in CPU time per request at low load; next to nothing under
load (a busy loop does not wait anyway; the poll is one callback per turn) and nothing when
idle. The fast front only; off (0) by default.
"""

from __future__ import annotations

import asyncio
from time import monotonic


class BusyPoll:
    """The poll of one worker's loop; `tick()` on every request begun and every answer."""

    __slots__ = ("_loop", "_seen", "_since", "_window", "idle", "ticks")

    def __init__(self, loop: asyncio.AbstractEventLoop, microseconds: int) -> None:
        self._loop = loop
        self._window = microseconds / 1e6
        self._seen = 0
        self._since = 0.0
        self.ticks = 0  # requests begun and answered: a change is activity
        self.idle = True  # not polling: the loop sleeps when it has nothing to do

    def tick(self) -> None:
        """A request began or was answered: poll until the window passes without another."""
        self.ticks += 1
        if self.idle:
            self.idle = False
            self._seen = self.ticks
            self._since = monotonic()
            self._loop.call_soon(self._poll)

    def _poll(self) -> None:
        now = monotonic()
        if self.ticks != self._seen:
            self._seen = self.ticks
            self._since = now
        elif now - self._since >= self._window:
            self.idle = True  # quiet for a whole window: let the loop sleep
            return
        self._loop.call_soon(self._poll)  # a pending callback makes the next epoll not wait

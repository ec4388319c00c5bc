"""The failed-key budget: how many bad keys one client address may present per window.

A well-formed key that is not in memory costs a Redis or database lookup, so a client sending
random keys makes the store work for every one of them (the negative cache only absorbs a key
sent twice). After `limit` failures (unknown, malformed or unparseable keys) from one address
within `window` seconds, that address's keys are refused with 429 before any lookup, until the
window that the first failure opened has passed.

Decisions, in the same spirit as the password budget (`gateway/throttle.py`):

- Only failures are counted. A request whose key the instance holds in memory is never
  checked (it costs no lookup: the hot path stays a dict hit), and an address that has not
  failed costs one dict lookup when its key does need a lookup.
- A good key does not reset its address's count: otherwise one valid key, presented between
  guesses, would buy an unlimited number of them.
- Keys that exist but cannot be used (disabled, expired, owner disabled) are not counted: whoever
  sends one holds a whole real key, which is no guess, and after one lookup it is answered from
  memory.
- Fixed windows, oldest first: each address's window starts at its first failure, and windows
  are kept in the order they started. Expired windows are swept from the front as new failures
  arrive, and at `max_tracked` the oldest window (the nearest to expiring anyway) is dropped, so
  a flood from many addresses costs bounded memory.
- Per instance here: N instances would allow up to N times the limit, so with Redis configured
  `Services.lookup_key` also counts in a shared budget (limits/failures.py). Pure apart from
  the clock, which is injectable; no I/O.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import TooManyRequests

MAX_TRACKED = 100_000
# The refusals that count against an address: a key that is no key of ours, or that no
# instance knows. Codes from credentials.py and keys/verify.py.
KEY_FAILURES = frozenset({"malformed-credential", "key-malformed", "key-unknown"})


def wait_seconds(started: float, failures: int, now: float, *, limit: int, window: float) -> int:
    """Whole seconds until a window opened at `started` with `failures` lets its address try
    again at `now`; 0 when it may try now. Rounded up: waiting that long ends the window."""
    remaining = window - (now - started)  # as `failed` measures a window: the two agree
    if failures < limit or remaining <= 0:
        return 0
    return max(1, math.ceil(remaining))


def key_budget_refusal(wait: int) -> TooManyRequests:
    """The 429 for an address over its failed-key budget, `wait` seconds before it may try."""
    return TooManyRequests(
        f"too many failed API keys from this address; try again in {wait} seconds",
        retry_after=wait,
        code="too-many-failed-keys",
    )


@dataclass(slots=True)
class _Window:
    started: float
    failures: int


class KeyBudget:
    """Failed keys per client address (see the module docstring)."""

    def __init__(
        self,
        *,
        limit: int,
        window_seconds: float,
        max_tracked: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._max = max_tracked
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()  # oldest window first

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may present keys again; 0 when it may now."""
        entry = self._windows.get(address)
        if entry is None:
            return 0
        return wait_seconds(
            entry.started, entry.failures, self._clock(), limit=self._limit, window=self._window
        )

    def refusal(self, address: str) -> TooManyRequests | None:
        """The 429 for `address` while it is over budget, else None."""
        wait = self.retry_after(address)
        return key_budget_refusal(wait) if wait else None

    def charge(self, address: str) -> TooManyRequests | None:
        """A key from `address` was refused: the 429 to answer instead while the address is
        over budget (then nothing more is counted), else None once the failure is counted."""
        over = self.refusal(address)
        if over is None:
            self.failed(address)
        return over

    def failed(self, address: str) -> None:
        """Count one failed key from `address`."""
        now = self._clock()
        windows = self._windows
        entry = windows.get(address)
        if entry is not None and now - entry.started < self._window:
            entry.failures += 1
            return
        if entry is not None:  # its window is over: a new one starts, at the back
            del windows[address]
        windows[address] = _Window(now, 1)
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        windows = self._windows
        while windows:
            oldest = next(iter(windows.values()))
            if now - oldest.started < self._window and len(windows) <= self._max:
                return
            windows.popitem(last=False)

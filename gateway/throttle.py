"""Throttling failed authentication attempts (login form, Basic email:password).

A fixed-window counter per key (an IP address, an account). In-process: each instance
counts for itself. With Redis configured, `Services.check_password` also counts in a shared
budget (limits/failures.py), so N instances allow the budget once, not N times.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_TRACKED = 100_000


@dataclass(slots=True)
class _Window:
    started: float
    failures: int


class Throttle:
    def __init__(self, *, limit: int, window_seconds: float) -> None:
        self._limit = limit
        self._window = window_seconds
        self._seen: OrderedDict[str, _Window] = OrderedDict()

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 when it may try now."""
        entry = self._seen.get(key)
        if entry is None:
            return 0
        elapsed = time.monotonic() - entry.started
        if elapsed >= self._window:
            del self._seen[key]
            return 0
        if entry.failures < self._limit:
            return 0
        return max(1, int(self._window - elapsed + 0.999))

    def failed(self, key: str) -> None:
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is None or now - entry.started >= self._window:
            self._seen[key] = _Window(now, 1)
        else:
            entry.failures += 1
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_TRACKED:
            self._seen.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._seen.pop(key, None)

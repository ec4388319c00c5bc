"""In-process LRU cache with per-entry expiry: the hot path for key verification.

A hit costs one dict lookup and a move to the LRU's end. Entries carry their own expiry (the
cache adds no record of its own per entry: a worker may hold 100,000 of them). They stay past
their expiry until evicted so that, when the database and Redis are both down, the verifier
can still serve an entry inside its stale window instead of failing every request (and never
one outside it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Expiring(Protocol):
    expires: float  # monotonic time after which the entry must be re-validated


E = TypeVar("E", bound=Expiring)


class LocalCache(Generic[E]):
    """A bounded mapping from bytes to expiring entries; the least recently used goes first."""

    __slots__ = ("_data", "_max")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("a cache holds at least one entry")
        self._data: OrderedDict[bytes, E] = OrderedDict()
        self._max = max_entries

    def get(self, key: bytes) -> E | None:
        """The entry, expired or not (the caller decides what an expired one is good for)."""
        entry = self._data.get(key)
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: E) -> None:
        self._data[key] = entry
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def drop(self, key: bytes) -> None:
        self._data.pop(key, None)

    def expire_all(self, now: float) -> None:
        """Make every entry due for re-validation at `now`, keeping it (for stale use)."""
        for entry in self._data.values():
            entry.expires = min(entry.expires, now)

    def update_values(self, change: Callable[[E], E]) -> None:
        """Replace every entry by `change(entry)`, keeping its place in the LRU order."""
        data = self._data
        for key, entry in data.items():
            data[key] = change(entry)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

"""In-process LRU cache with per-entry expiry: the hot path for key verification.

A hit costs one dict lookup and a move to the LRU's end. Entries stay past their expiry until
evicted so that, when the database and Redis are both down, the verifier can still serve an
entry inside its stale window instead of failing every request (and never one outside it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(slots=True)
class Entry(Generic[V]):
    value: V
    expires: float  # monotonic time after which the entry must be re-validated


class LocalCache(Generic[V]):
    """A bounded mapping from bytes to expiring values; the least recently used goes first."""

    __slots__ = ("_data", "_max")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("a cache holds at least one entry")
        self._data: OrderedDict[bytes, Entry[V]] = OrderedDict()
        self._max = max_entries

    def get(self, key: bytes) -> Entry[V] | None:
        """The entry, expired or not (the caller decides what an expired one is good for)."""
        entry = self._data.get(key)
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def put(self, key: bytes, value: V, expires: float) -> None:
        self._data[key] = Entry(value, expires)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def drop(self, key: bytes) -> None:
        self._data.pop(key, None)

    def expire_all(self, now: float) -> None:
        """Make every entry due for re-validation at `now`, keeping it (for stale use)."""
        for entry in self._data.values():
            entry.expires = min(entry.expires, now)

    def update_values(self, change: Callable[[V], V]) -> None:
        """Replace every entry's value by `change(value)`, keeping its expiry and order."""
        for entry in self._data.values():
            entry.value = change(entry.value)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

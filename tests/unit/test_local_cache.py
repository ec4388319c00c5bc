"""The in-process LRU with expiry that fronts key verification."""

from __future__ import annotations

import pytest

from gateway.cache.local import LocalCache


class Item:
    __slots__ = ("expires", "value")

    def __init__(self, value: object, expires: float) -> None:
        self.value = value
        self.expires = expires


def test_get_returns_the_entry_stored_expired_or_not() -> None:
    """An entry comes back as it was stored, with its expiry, expired or not."""
    cache: LocalCache[Item] = LocalCache(4)
    one = Item("one", 10.0)
    cache.put(b"a", one)
    assert cache.get(b"a") is one
    assert cache.get(b"missing") is None


def test_least_recently_used_entry_is_evicted_first() -> None:
    """Past its size, the cache drops the entry read or written longest ago."""
    cache: LocalCache[Item] = LocalCache(2)
    cache.put(b"a", Item(1, 1.0))
    cache.put(b"b", Item(2, 1.0))
    cache.get(b"a")  # now b is the least recently used
    cache.put(b"c", Item(3, 1.0))
    assert cache.get(b"b") is None
    assert cache.get(b"a") is not None
    assert cache.get(b"c") is not None
    assert len(cache) == 2


def test_put_replaces_and_drop_removes() -> None:
    """A second put replaces the entry; drop forgets it (absent: no error)."""
    cache: LocalCache[Item] = LocalCache(2)
    cache.put(b"a", Item(1, 1.0))
    cache.put(b"a", Item(2, 5.0))
    entry = cache.get(b"a")
    assert entry is not None
    assert (entry.value, entry.expires) == (2, 5.0)
    cache.drop(b"a")
    cache.drop(b"a")
    assert cache.get(b"a") is None
    assert len(cache) == 0


def test_expire_all_keeps_entries_but_makes_them_due() -> None:
    """expire_all brings every expiry forward to `now` (never later) and keeps the entries."""
    cache: LocalCache[Item] = LocalCache(4)
    cache.put(b"later", Item(1, 100.0))
    cache.put(b"earlier", Item(2, 5.0))
    cache.expire_all(50.0)
    later, earlier = cache.get(b"later"), cache.get(b"earlier")
    assert later is not None
    assert later.expires == 50.0
    assert earlier is not None
    assert earlier.expires == 5.0
    assert len(cache) == 2


def test_update_values_replaces_entries_in_place_of_the_lru_order() -> None:
    """Replaced entries keep their keys and their order: the oldest is still evicted first."""
    cache: LocalCache[Item] = LocalCache(2)
    cache.put(b"a", Item(1, 1.0))
    cache.put(b"b", Item(2, 2.0))
    cache.update_values(lambda item: Item(item.value * 10, item.expires))  # type: ignore[operator]
    cache.put(b"c", Item(3, 3.0))
    assert cache.get(b"a") is None
    entry = cache.get(b"b")
    assert entry is not None
    assert (entry.value, entry.expires) == (20, 2.0)


def test_clear_empties_the_cache() -> None:
    """clear() forgets every entry."""
    cache: LocalCache[Item] = LocalCache(4)
    cache.put(b"a", Item(1, 1.0))
    cache.clear()
    assert len(cache) == 0


def test_a_cache_must_hold_something() -> None:
    """A size below one is a configuration error, not a cache that silently holds nothing."""
    with pytest.raises(ValueError, match="at least one"):
        LocalCache(0)

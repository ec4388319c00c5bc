"""The in-process LRU with expiry that fronts key verification."""

from __future__ import annotations

import pytest

from gateway.cache.local import LocalCache


def test_get_returns_entries_with_their_expiry() -> None:
    """An entry comes back with the expiry it was stored with, expired or not."""
    cache: LocalCache[str] = LocalCache(4)
    cache.put(b"a", "one", 10.0)
    entry = cache.get(b"a")
    assert entry is not None
    assert (entry.value, entry.expires) == ("one", 10.0)
    assert cache.get(b"missing") is None


def test_least_recently_used_entry_is_evicted_first() -> None:
    """Past its size, the cache drops the entry read or written longest ago."""
    cache: LocalCache[int] = LocalCache(2)
    cache.put(b"a", 1, 1.0)
    cache.put(b"b", 2, 1.0)
    cache.get(b"a")  # now b is the least recently used
    cache.put(b"c", 3, 1.0)
    assert cache.get(b"b") is None
    assert cache.get(b"a") is not None
    assert cache.get(b"c") is not None
    assert len(cache) == 2


def test_put_replaces_and_drop_removes() -> None:
    """A second put replaces the value and expiry; drop forgets the entry (absent: no error)."""
    cache: LocalCache[int] = LocalCache(2)
    cache.put(b"a", 1, 1.0)
    cache.put(b"a", 2, 5.0)
    entry = cache.get(b"a")
    assert entry is not None
    assert (entry.value, entry.expires) == (2, 5.0)
    cache.drop(b"a")
    cache.drop(b"a")
    assert cache.get(b"a") is None
    assert len(cache) == 0


def test_expire_all_keeps_entries_but_makes_them_due() -> None:
    """expire_all brings every expiry forward to `now` (never later) and keeps the entries."""
    cache: LocalCache[int] = LocalCache(4)
    cache.put(b"later", 1, 100.0)
    cache.put(b"earlier", 2, 5.0)
    cache.expire_all(50.0)
    later, earlier = cache.get(b"later"), cache.get(b"earlier")
    assert later is not None
    assert later.expires == 50.0
    assert earlier is not None
    assert earlier.expires == 5.0
    assert len(cache) == 2


def test_clear_empties_the_cache() -> None:
    """clear() forgets every entry."""
    cache: LocalCache[int] = LocalCache(4)
    cache.put(b"a", 1, 1.0)
    cache.clear()
    assert len(cache) == 0


def test_a_cache_must_hold_something() -> None:
    """A size below one is a configuration error, not a cache that silently holds nothing."""
    with pytest.raises(ValueError, match="at least one"):
        LocalCache(0)

"""Workers hide their startup heap from the cyclic garbage collector (gateway.server)."""

from __future__ import annotations

import gc

from gateway.server import freeze_startup_heap


def test_startup_heap_is_frozen_and_later_objects_are_not() -> None:
    gc.unfreeze()
    try:
        startup = [[] for _ in range(1000)]  # long-lived, as the app's objects are
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen >= len(startup)
        later = [[] for _ in range(10)]  # what requests allocate stays collectable
        assert gc.get_freeze_count() == frozen
        assert any(obj is later for obj in gc.get_objects())
    finally:
        gc.unfreeze()

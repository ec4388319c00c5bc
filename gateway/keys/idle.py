"""Idle keys: a key unused for `idle_key_days` days is disabled (off when 0).

"Unused" counts from the key's last use (recorded in batches, see services.py) or, for a key
never used, from its creation. Every instance sweeps now and then; the sweep is one guarded
UPDATE per key (active and still idle), audited as `key.idle-disable` and invalidated like
any change, so instances sweeping together disable each key once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from gateway.store.base import ApiKey, Store, StoreError

log = logging.getLogger("gateway.keys")

SWEEP_SECONDS = 3600.0


def disable_at(key: ApiKey, idle_days: float) -> datetime | None:
    """When the key will be disabled for idleness if it stays unused (None: never)."""
    if idle_days <= 0 or key.status != "active":
        return None
    since = key.last_used_at or key.created_at
    return since + timedelta(days=idle_days)


async def sweep(store: Store, idle_days: float, now: datetime | None = None) -> list[ApiKey]:
    """Disable every active key idle for `idle_days`; the keys disabled."""
    if idle_days <= 0:
        return []
    moment = now or datetime.now(UTC)
    disabled = await store.disable_idle_keys(moment - timedelta(days=idle_days))
    for key in disabled:
        log.info("key %s disabled: unused for %g days", key.id, idle_days)
    return disabled


async def run(store: Store, idle_days: float, interval: float = SWEEP_SECONDS) -> None:
    """Sweep until cancelled; a failed sweep is logged and tried again next time."""
    task = asyncio.current_task()
    while True:
        try:
            await sweep(store, idle_days)
        except (StoreError, OSError, TimeoutError) as exc:
            log.warning("idle key sweep failed: %s", type(exc).__name__)
        if task is not None and task.cancelling():  # a stop its deadline took (3.11)
            raise asyncio.CancelledError
        await asyncio.sleep(interval)

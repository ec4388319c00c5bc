"""Hot reload of the policy in a serving worker.

A reload reads the configured policy files again, validates them with the loader used at
start, and only then swaps the new policy in (`Services.swap_policy`: one step of the event
loop). A request decides under the policy active when it starts and keeps that object to its
end (a lookup carries it: `NeedsLookup.policy`), so requests in flight are not affected. On
any error the active policy stays, one line is logged and the failure is counted.

Triggers: SIGHUP to a worker (the master forwards its own, see supervisor.py), and
`POST /v1/admin/policy/reload`, which reloads the worker that took it and then asks the
master to reload every worker. The master also reads the settings again and sends the ones
that may change to the workers (settings_reload.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gateway import metrics
from gateway.policy.loader import PolicyError, load_policy
from gateway.policy.model import Policy
from gateway.services import Services

log = logging.getLogger("gateway")


@dataclass(slots=True)
class ReloadCounts:
    """This process's reloads, for metrics: `succeeded` counts swaps (an unchanged policy is
    not swapped, nor counted), `failed` counts reloads that kept the old policy."""

    succeeded: int = 0
    failed: int = 0


COUNTS = ReloadCounts()
_master: int | None = None  # the supervising master's pid, when there is one


def supervised_by(pid: int) -> None:
    """Called once in a worker: the admin endpoint's reloads go through this master."""
    global _master
    _master = pid


def ask_master() -> bool:
    """Ask the master to reload every worker (SIGHUP); False when there is none (anymore)."""
    if _master is None or os.getppid() != _master:
        return False
    os.kill(_master, signal.SIGHUP)
    return True


def short(digest: str) -> str:
    return digest[:12] or "-"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def adopt(old: Policy, new: Policy) -> Policy:
    """`new`, keeping the old policy's Upstream objects where the upstream did not change:
    connection pools belong to an Upstream object, so unchanged upstreams keep their
    pooled connections across the reload."""
    upstreams = {
        name: old.upstreams[name] if old.upstreams.get(name) == upstream else upstream
        for name, upstream in new.upstreams.items()
    }
    return replace(new, upstreams=upstreams)


async def reload_policy(services: Services) -> bool:
    """Re-read, validate and swap the policy; whether it changed. Raises PolicyError (the
    active policy stays; the failure is logged in one line and counted)."""
    async with services.reload_lock:  # a SIGHUP and an admin request: one after the other
        active = services.policy
        try:
            # Off the event loop: parsing a large policy must not stall requests.
            new = await asyncio.to_thread(load_policy, services.settings.policy)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the last good policy
            COUNTS.failed += 1
            metrics.policy_reload("failed")
            line = first_line(exc)
            log.error("policy reload failed; keeping policy %s: %s", short(active.digest), line)
            raise exc if isinstance(exc, PolicyError) else PolicyError(line) from None
        if new.digest == active.digest:
            log.info("policy reload: unchanged (%s)", short(active.digest))
            return False
        services.swap_policy(adopt(active, new))
        COUNTS.succeeded += 1
        metrics.policy_reload("ok")
        log.info(
            "policy reloaded: %s (was %s), %d routes",
            short(new.digest),
            short(active.digest),
            sum(1 for _ in new.routes),
        )
        return True


def policy_status(services: Services) -> dict[str, Any]:
    """The active policy, as /readyz and the reload endpoint show it."""
    loaded = datetime.fromtimestamp(services.policy_loaded_at, UTC)
    return {
        "sha256": services.policy.digest,
        "loadedAt": loaded.isoformat().replace("+00:00", "Z"),
    }

"""Which settings a reload may change in serving processes, and applying them.

A reload (SIGHUP to the master, `POST /v1/admin/policy/reload`) reads the settings again the
way `gateway serve` read them at start (config file, GATEWAY_* environment, the command's
flags). The ones named in RELOADABLE take effect in the master and every worker; any other
that changed keeps its start value until a restart, and the master says so in one line.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from gateway import logs
from gateway.settings import Settings

RELOADABLE = ("log_level", "access_log")


def compare(running: Settings, read: Settings) -> tuple[dict[str, Any], list[str]]:
    """What a reload finds: the reloadable settings whose value changed (name: new value),
    and the names of the other settings that changed (they need a restart)."""
    changed = [
        f.name for f in fields(Settings) if getattr(running, f.name) != getattr(read, f.name)
    ]
    live = {name: getattr(read, name) for name in changed if name in RELOADABLE}
    return live, [name for name in changed if name not in RELOADABLE]


def apply(values: dict[str, Any]) -> None:
    """Apply reloadable settings (as `compare` gives them) to this process."""
    if "log_level" in values:
        logs.set_level(values["log_level"])
    if "access_log" in values:
        logs.set_access_log(bool(values["access_log"]))


def describe(values: dict[str, Any]) -> str:
    """`log_level=DEBUG, access_log=True`: reloadable settings hold no secret."""
    return ", ".join(f"{name}={values[name]}" for name in sorted(values))

"""What a reload may change (settings_reload.py): the reloadable settings that changed, by
value, and the names of every other setting that changed; applying them to this process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import logs, settings_reload
from gateway.settings import Settings

LEVELS = st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"])
CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "log_level": LEVELS,
        "access_log": st.booleans(),
        "shutdown_timeout": st.floats(min_value=1, max_value=100),
        "login_max_failures": st.integers(min_value=1, max_value=50),
        "workers": st.integers(min_value=1, max_value=8),
    },
)


@given(start=CHANGES, read=CHANGES)
def test_compare_splits_what_changed_into_live_values_and_names_needing_a_restart(
    start: dict[str, object], read: dict[str, object]
) -> None:
    running, new = replace(Settings(), **start), replace(Settings(), **read)
    live, fixed = settings_reload.compare(running, new)
    changed = {name for name in {*start, *read} if getattr(running, name) != getattr(new, name)}
    assert set(live) == changed & set(settings_reload.RELOADABLE)
    assert set(fixed) == changed - set(settings_reload.RELOADABLE)
    assert all(live[name] == getattr(new, name) for name in live)
    # Applying the live part to the running settings leaves only restart-bound differences.
    assert settings_reload.compare(replace(running, **live), new) == ({}, fixed)


def test_secrets_are_named_never_shown() -> None:
    running = Settings(secret=b"a" * 32)
    live, fixed = settings_reload.compare(running, replace(running, secret=b"b" * 32))
    assert (live, fixed) == ({}, ["secret"])


@pytest.fixture
def restored() -> Iterator[None]:
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    level, disabled = root.level, access.disabled
    yield
    root.setLevel(level)
    access.disabled = disabled


@pytest.mark.usefixtures("restored")
def test_apply_sets_the_level_and_turns_the_access_log_on_and_off() -> None:
    access = logging.getLogger("aiohttp.access")
    settings_reload.apply({"log_level": "WARNING", "access_log": True})
    assert logging.getLogger().level == logging.WARNING
    assert not logs.access_enabled(access)  # its lines are INFO: held back at WARNING
    settings_reload.apply({"log_level": "DEBUG"})
    assert logs.access_enabled(access)
    settings_reload.apply({"access_log": False})
    assert not logs.access_enabled(access)
    assert settings_reload.describe({"log_level": "DEBUG", "access_log": False}) == (
        "access_log=False, log_level=DEBUG"
    )

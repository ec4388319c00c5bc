"""The start-up check of the hashing secret against the one the database was set up with.

A different secret would otherwise start silently and turn every key into a 401
`key-unknown`, indistinguishable from a wrong key. The database keeps the fingerprint of each
secret it has known (keys/hashing.py `fingerprint`, never the secret itself):

- none yet: the first start records the current one;
- the current one: nothing to do;
- the database's current one is among `previous_secrets`: a rotation; the new secret becomes
  current and the old one retired, audited;
- anything else, or a retired secret (an instance that was not rotated would undo the
  rotation): the start stops with one line saying what happened and how to proceed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.keys.hashing import KeyHasher
from gateway.settings import Settings, SettingsError
from gateway.store.base import Audit, Conflict, Store

log = logging.getLogger("gateway.keys")

_HOW = (
    "if you are rotating it, set previous_secrets (GATEWAY_PREVIOUS_SECRETS or "
    "GATEWAY_PREVIOUS_SECRETS_FILE) to the old secret; otherwise start with the old secret"
)


class SecretMismatch(SettingsError):
    """The configured hashing secret is not one this database accepts; names no secret."""


async def check_configured(store: Store, settings: Settings) -> None:
    """`check_secret` for the secrets in `settings` (a migrated database)."""
    previous = [KeyHasher(s) for s in settings.previous_secrets]
    await check_secret(store, KeyHasher(settings.secret), previous)


async def check_secret(store: Store, current: KeyHasher, previous: Sequence[KeyHasher]) -> None:
    """Record or confirm the current secret; SecretMismatch if it must not be used."""
    try:
        await _settle(store, current, previous)
    except Conflict:
        # Another instance started with a secret at the same moment: judge against what it
        # recorded (the same secret is then simply confirmed).
        await _settle(store, current, previous)
    await _warn_orphans(store, current, previous)


async def _settle(store: Store, current: KeyHasher, previous: Sequence[KeyHasher]) -> None:
    known = await store.hashing_secrets()
    mine = current.fingerprint
    recorded = next((fp for fp, state in known.items() if state == "current"), None)
    if known.get(mine) == "current":
        return
    if known.get(mine) == "retired":
        raise SecretMismatch(
            f"the hashing secret (fingerprint {mine}) was replaced on this database by the one "
            f"with fingerprint {recorded}; start with that secret (keep this one in "
            "previous_secrets while keys still depend on it)"
        )
    if recorded is None:
        await store.adopt_secret(mine, None, Audit("system", "secret.adopt", f"secret:{mine}"))
        log.debug("recorded the hashing secret's fingerprint %s", mine)
        return
    if recorded in {p.fingerprint for p in previous}:
        await store.adopt_secret(
            mine,
            recorded,
            Audit("system", "secret.rotate", f"secret:{mine}", {"previous": recorded}),
        )
        log.warning(
            "hashing secret rotated from fingerprint %s to %s; keys are re-hashed on their next "
            "use (see `gateway keys rehash-status`)",
            recorded,
            mine,
        )
        return
    raise SecretMismatch(
        f"the hashing secret differs from the one this database was set up with (fingerprint "
        f"{recorded}, configured {mine}); {_HOW}"
    )


async def _warn_orphans(store: Store, current: KeyHasher, previous: Sequence[KeyHasher]) -> None:
    usable = {current.fingerprint, *(p.fingerprint for p in previous)}
    for fp, count in (await store.count_keys_by_secret()).items():
        if fp is not None and fp not in usable:
            log.warning(
                "%d key(s) were hashed with a secret no longer configured (fingerprint %s) and "
                "will be refused; add it to previous_secrets if they are still needed",
                count,
                fp,
            )

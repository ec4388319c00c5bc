"""Keys hashed with a previous secret: found on a lookup miss, then moved to the current one.

Only a database miss under the current secret gets here, so the cached hot path is untouched
and an unknown key costs one extra lookup per previous secret, itself negatively cached.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from gateway.keys.hashing import KeyHasher
from gateway.store.base import Audit, KeyWithOwner, Store

log = logging.getLogger("gateway.keys")

Invalidate = Callable[[list[bytes]], Awaitable[None]]


class PreviousSecrets:
    """Looks a key up under each previous secret and re-hashes it with the current one."""

    def __init__(
        self,
        store: Store,
        current: KeyHasher,
        previous: Sequence[KeyHasher],
    ) -> None:
        self._store = store
        self._current = current
        self._previous = tuple(previous)

    async def find(
        self, text: str, digest: bytes, invalidate: Invalidate
    ) -> tuple[KeyWithOwner | None, bool]:
        """The key whose stored hash `text` has under a previous secret, and whether it was
        re-hashed to `digest` (its hash under the current secret). A key that was not (it
        changed meanwhile, or this instance's secret is not the database's current one) must
        not be cached under `digest`: its invalidations would name the old hash."""
        for hasher in self._previous:
            old = hasher.digest(text)
            found = await self._store.find_key_by_hash(old)
            if found is None:
                continue
            key_id = found.key.id
            moved = await self._store.rehash_key(
                key_id,
                old,
                digest,
                self._current.fingerprint,
                Audit(
                    "system",
                    "key.rehash",
                    f"key:{key_id}",
                    {"from": hasher.fingerprint, "to": self._current.fingerprint},
                ),
            )
            if moved:
                # Instances still on the old secret may cache the key under its old hash.
                await invalidate([old])
                log.info("key %s re-hashed with the current secret", key_id)
            return found, moved
        return None, False


async def rehash_status(
    store: Store, current: KeyHasher, previous: Sequence[KeyHasher]
) -> list[str]:
    """What `gateway keys rehash-status` prints: keys per secret, ending with whether the
    previous secrets can be dropped. Fingerprints only; never a secret."""
    counts = await store.count_keys_by_secret()
    lines = [f"current secret {current.fingerprint}: {_keys(counts.pop(current.fingerprint, 0))}"]
    waiting = 0
    for i, hasher in enumerate(previous, 1):
        n = counts.pop(hasher.fingerprint, 0)
        waiting += n
        lines.append(f"previous secret {i} ({hasher.fingerprint}): {_keys(n)} still depend on it")
    for fp, n in sorted(counts.items(), key=lambda item: str(item[0])):
        lines.append(f"secret {fp or 'unrecorded'} (not configured): {_keys(n)} cannot be verified")
    if not previous:
        lines.append("no previous_secrets are configured")
    elif waiting:
        lines.append(
            f"{_keys(waiting)} still depend on previous_secrets; each is re-hashed on its next "
            "successful use"
        )
    else:
        lines.append("nothing depends on previous_secrets any more; they can be removed")
    return lines


def _keys(n: int) -> str:
    return f"{n} key{'' if n == 1 else 's'}"

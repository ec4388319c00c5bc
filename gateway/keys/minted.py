"""A freshly minted key, and how a principal is named in audit records."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.evaluate import Principal
from gateway.store.base import ApiKey


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly minted key. `text` exists only here, once: show it and drop it.

    `previous` is the key it replaced (rotation, re-authorization), as it is after: it
    stops at its `expires_at`."""

    text: str
    record: ApiKey
    previous: ApiKey | None = None

    def __repr__(self) -> str:
        return f"NewKey(id={self.record.id!r})"


def actor_of(principal: Principal | None) -> str:
    if principal is None:
        return "cli"
    if principal.key_id is not None:
        return f"key:{principal.key_id}"
    return f"user:{principal.user_id}"

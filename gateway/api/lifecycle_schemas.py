"""Request bodies and response shapes of the key-lifecycle endpoints. Pure.

* `POST /v1/apikeys/{id}/rotate` `{grace?, scopes?}`: `grace` is `immediate` (the default),
  a number of seconds, or a duration such as `1h` (at most 7 days); `scopes` (space-separated,
  a subset of the key's) narrows the new key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway.api.schemas import _object, _raise, iso, v1_key
from gateway.keys import rotation
from gateway.keys.manage import NewKey


@dataclass(frozen=True, slots=True)
class RotateRequest:
    grace: timedelta
    permissions: tuple[str, ...] | None  # None: keep every permission


def rotate_request(body: object) -> RotateRequest:
    data, errors = _object(body, optional=("grace", "scopes"))
    grace = timedelta(0)
    if "grace" in data:
        try:
            grace = rotation.parse_grace(data["grace"])
        except ValueError as exc:
            errors.append(("grace", str(exc)))
    scopes = data.get("scopes")
    if scopes is not None and not isinstance(scopes, str):
        errors.append(("scopes", "must be a string of space-separated scopes, or null"))
    _raise(errors)
    return RotateRequest(grace, tuple(scopes.split()) if isinstance(scopes, str) else None)


def rotated(new: NewKey) -> dict[str, Any]:
    """The new key (shown this once) and when the key it replaced stops."""
    body = v1_key(new.record, new.text)
    if new.previous is not None:
        body["previous"] = {
            "id": new.previous.id,
            "expiresAt": iso(new.previous.expires_at),
        }
    return body

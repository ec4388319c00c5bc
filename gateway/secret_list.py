"""Parsing a list of secrets (`previous_secrets`): never echoing any of them.

A YAML list, or text with one secret per line or comma-separated (environment variables and
secret files). Errors name the setting and the entry's position and length, never its value.
"""

from __future__ import annotations

from typing import Any

MIN_SECRET_BYTES = 32


class SecretListError(ValueError):
    """A list of secrets that cannot be used; the message names no secret."""


def secret_list(name: str, value: Any) -> tuple[bytes, ...]:
    """The distinct secrets in `value`, in order; SecretListError naming `name` otherwise."""
    if isinstance(value, list):
        items = [_entry(name, i, item) for i, item in enumerate(value, 1)]
    elif isinstance(value, bytes | str):
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        items = raw.replace(b",", b"\n").split(b"\n")
    else:
        raise SecretListError(f"{name}: expected a list of secrets or comma-separated text")
    out: dict[bytes, None] = {}
    for i, item in enumerate((s.strip() for s in items if s.strip()), 1):
        if len(item) < MIN_SECRET_BYTES:
            raise SecretListError(
                f"{name}: secret {i} is {len(item)} bytes; each must be at least "
                f"{MIN_SECRET_BYTES} bytes"
            )
        out[item] = None
    return tuple(out)


def _entry(name: str, position: int, item: Any) -> bytes:
    if isinstance(item, bool) or not isinstance(item, str | int | float):
        raise SecretListError(f"{name}: secret {position} is not text")
    return str(item).encode("utf-8", "surrogateescape")

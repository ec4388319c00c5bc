"""Client text must have a UTF-8 form before anything stores, hashes or shows it.

A Python `str` can hold a lone surrogate (U+D800..U+DFFF) that no UTF-8 encoder accepts:
JSON's `"\\ud800"` escape produces one, so does a form that declares `charset=utf-16`, and
so do command-line arguments that are not UTF-8 (decoded with `surrogateescape`). Left in,
such a string fails deep inside a database driver (asyncpg looked like an outage, SQLite
raised mid-query). Checking once where bodies, forms and arguments are parsed keeps every
handler behind that point on encodable text. Pure code: no I/O, no framework.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NOT_UTF8 = "must be valid Unicode text (it holds a lone surrogate, which has no UTF-8 form)"


def encodable(text: str) -> bool:
    """True when `text` has a UTF-8 form (holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(text: str) -> str:
    """`text` with each unencodable character written as a `\\udXXX` escape, safe to answer."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unencodable_in_json(data: Any) -> str | None:
    """The path (`label`, `permissions[2]`, `a.b`; `body` for the document itself) of a
    string in decoded JSON, member name or value, that has no UTF-8 form; None if none has.

    Iterative, so a document as deep as the JSON parser accepted cannot exhaust the stack.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not encodable(value):
                return path or "body"
        elif isinstance(value, dict):
            for name, item in value.items():
                if not encodable(name):
                    return f"{path}.{shown(name)}" if path else shown(name)
                stack.append((f"{path}.{name}" if path else name, item))
        elif isinstance(value, list):
            base = path or "body"
            stack.extend((f"{base}[{i}]", item) for i, item in enumerate(value))
    return None


def unencodable_field(fields: Iterable[tuple[str, str]]) -> str | None:
    """The name of the first form field whose name or value has no UTF-8 form; else None."""
    for name, value in fields:
        if not encodable(name) or not encodable(value):
            return shown(name)
    return None

"""A key's path restriction: Haplo's `/prefix` and `=/exact`, matched on segment boundaries.

Haplo compares the raw URI string, so `/api/users/42` also admits `/api/users/421`. Keygate
matches the canonical path (see `paths.canonicalize`) on whole segments instead:

* `/api/reports` allows `/api/reports`, `/api/reports/` and `/api/reports/x`, not `/api/reportsX`;
  `/` allows everything;
* `/api/reports/` (a trailing slash) allows only what lies below: `/api/reports/` and
  `/api/reports/x`, not `/api/reports` itself. That is Haplo's meaning (its string prefix
  `/api/reports/` does not match `/api/reports`) and the rule's plain reading;
* `=/api/x` allows exactly `/api/x` (the caller passes the path without its query).

Rules must already be canonical, so a rule means exactly what it says, and are stored as
written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.policy.paths import TargetRejected, canonicalize

MAX_RULE_LENGTH = 1024


class PathRuleError(ValueError):
    """A path rule's text is malformed or not canonical; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class PathRule:
    """A restriction on which canonical paths a key may reach."""

    kind: Literal["prefix", "exact"]
    path: str  # canonical; a prefix ending in "/" admits only what lies below it

    def __post_init__(self) -> None:
        # Cheap invariants only: full validation is `parse_path_rule`'s job.
        if self.kind not in ("prefix", "exact") or not self.path.startswith("/"):
            raise PathRuleError(f"invalid path rule: kind={self.kind!r} path={self.path!r}")

    def allows(self, path: str) -> bool:
        """Whether this rule admits `path`, a `CanonicalTarget.path` (no query)."""
        if self.kind == "exact":
            return path == self.path
        if self.path.endswith("/"):
            # `/api/reports/` (and `/`): below it only; the slash is the segment boundary.
            return path.startswith(self.path)
        # Whole segments only: `/api/reports` must not admit `/api/reportsX`.
        return path == self.path or path.startswith(self.path + "/")

    def within(self, other: PathRule | None) -> bool:
        """Whether every path this rule allows is also allowed by `other` (None: unrestricted).

        Used when a key mints a key: the new key's rule must not reach further than its own.
        """
        if other is None:
            return True
        if other.kind == "exact":
            # A prefix always reaches paths below itself, so it never fits inside an exact rule.
            return self.kind == "exact" and self.path == other.path
        # Every path this prefix allows extends its own path on a segment boundary, and a
        # prefix rule that allows a path allows such extensions of it too.
        return other.allows(self.path)

    def __str__(self) -> str:
        return self.path if self.kind == "prefix" else f"={self.path}"


def parse_path_rule(text: str) -> PathRule:
    """Parse `/prefix` or `=/exact`; raise `PathRuleError` naming the problem."""
    if not text:
        raise PathRuleError("path rule is empty; use '/prefix' or '=/exact/path'")
    if len(text) > MAX_RULE_LENGTH:
        raise PathRuleError(f"path rule is longer than {MAX_RULE_LENGTH} characters")
    exact = text.startswith("=")
    path = text[1:] if exact else text
    if not path.startswith("/"):
        raise PathRuleError(f"path rule {_show(text)} must start with '/' or '=/'")
    # A query or fragment is never part of what a rule matches; refuse rather than ignore it.
    if "?" in path or "#" in path:
        raise PathRuleError(f"path rule {_show(text)} must not contain '?' or '#'")
    try:
        canonical = canonicalize(path).path
    except TargetRejected as exc:
        raise PathRuleError(f"path rule {_show(text)} is not a valid path: {exc}") from None
    if canonical != path:
        # Refuse instead of repairing: a stored rule must read exactly as it is enforced.
        prefix = "=" if exact else ""
        raise PathRuleError(
            f"path rule {_show(text)} is not canonical; write it as {_show(prefix + canonical)}"
        )
    return PathRule("exact" if exact else "prefix", canonical)


def _show(text: str) -> str:
    return repr(text[:100] + "..." if len(text) > 100 else text)

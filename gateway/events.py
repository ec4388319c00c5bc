"""Security events in the log: failed logins and lockouts, refused keys, revocations.

One logger, `gateway.security`, so operators can route these apart. Every line names ids and
addresses, never a key, password or hash (nor the email a password was tried for: people type
passwords into that field). Failed keys and passwords come from clients, so a flood could fill
a disk: they go through a `RateLimitedLog`, at most CLIENT_EVENTS_PER_SECOND lines a second,
then one line saying how many were left out.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("gateway.security")

CLIENT_EVENTS_PER_SECOND = 10


class RateLimitedLog:
    """At most `per_second` lines in any one-second window; the lines left out are counted
    and reported once, by the next line that gets through (or by `flush`)."""

    def __init__(self, logger: logging.Logger, per_second: int, *, clock: Any = time.monotonic):
        self._log = logger
        self._per_second = per_second
        self._clock = clock
        self._window = 0.0
        self._written = 0
        self.suppressed = 0

    def warning(self, message: str, *args: object, **fields: object) -> bool:
        """Log one line unless over budget; whether it was written."""
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._written = now, 0
            self.flush()
        if self._written >= self._per_second:
            self.suppressed += 1
            return False
        self._written += 1
        self._log.warning(message, *args, extra={"event": fields} if fields else None)
        return True

    def flush(self) -> None:
        if self.suppressed:
            count, self.suppressed = self.suppressed, 0
            self._log.warning(
                "suppressed %d similar line(s) in the last second(s)",
                count,
                extra={"event": {"event": "suppressed", "count": count}},
            )


_client_events = RateLimitedLog(log, CLIENT_EVENTS_PER_SECOND)


def key_refused(outcome: str, key_id: str | None, address: str) -> None:
    """A request's key was refused (unknown, malformed, disabled, over budget)."""
    _client_events.warning(
        "refused key %s from %s: %s",
        key_id or "-",
        address or "-",
        outcome,
        event="key-refused",
        outcome=outcome,
        key_id=key_id,
        client=address,
    )


def login_failed(address: str) -> None:
    """A password check failed (login page, Basic email:password, re-authentication)."""
    _client_events.warning(
        "failed password check from %s", address or "-", event="login-failed", client=address
    )


def login_locked(address: str, wait: int) -> None:
    """Failures just crossed the throttle: checks are refused for `wait` seconds."""
    _client_events.warning(
        "password checks locked for %d s after too many failures (latest from %s)",
        wait,
        address or "-",
        event="login-locked",
        client=address,
        retry_after=wait,
    )


def key_changed(action: str, key_id: str, actor: str) -> None:
    """A key was revoked, disabled or enabled (`action`: key.revoke, key.disable, ...): routine,
    so INFO, but on the security logger for whoever follows keys."""
    log.info(
        "%s %s by %s",
        action,
        key_id,
        actor,
        extra={"event": {"event": action, "key_id": key_id, "actor": actor}},
    )

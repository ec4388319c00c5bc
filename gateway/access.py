"""Request ids and access-log lines, the same on both servers.

Every request gets an id: the `X-Request-Id` a trusted proxy sent (setting `trusted_proxies`),
if it is one well-formed value, else a new one. It is forwarded upstream and returned to the
client. A client's own id is never believed from an untrusted peer, and a sent id is checked
for length and characters, so a header cannot smuggle line breaks, control characters or
kilobytes into the logs or the upstream's.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from aiohttp import web

from gateway.logs import redact_keys

REQUEST_ID: Final = "X-Request-Id"
MAX_ID_LENGTH = 128
_ID_SHAPE: Final = re.compile(rf"[A-Za-z0-9._:@+=/-]{{1,{MAX_ID_LENGTH}}}")


class RequestIds:
    """New ids: a random prefix per process and a counter (no system call per request)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6) + "-"
        self._count = 0

    def new(self) -> str:
        self._count += 1
        # Percent format: one C call when compiled; an f-string with `:x` makes two method calls.
        return self._prefix + "%x" % self._count  # noqa: UP031

    def take(self, sent: Sequence[str], trusted: bool) -> str:
        """The id for a request that came with `sent` from a peer `trusted` or not."""
        if trusted and len(sent) == 1 and _ID_SHAPE.fullmatch(sent[0]):
            return sent[0]
        return self.new()


IDS: Final = RequestIds()


def valid_id(text: str) -> bool:
    return _ID_SHAPE.fullmatch(text) is not None


class Access(NamedTuple):
    """One answered request, as the access log records it (durations in seconds)."""

    request_id: str
    client: str | None
    method: str
    target: str
    route: str
    status: int
    outcome: str
    key_id: str | None
    user_id: str | None
    upstream_status: int | None
    bytes: int
    total: float
    upstream: float | None
    auth: float | None
    referer: str | None = None
    agent: str | None = None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def log_access(logger: logging.Logger, a: Access) -> None:
    """One line in aiohttp's default format (peer, time, request line, status, bytes,
    Referer, User-Agent) followed by the gateway's fields; with `log_format: json` the same
    fields as JSON. Anything shaped like a key in the target or headers keeps only its id."""
    target = redact_keys(a.target)
    referer = redact_keys(a.referer) if a.referer else None
    agent = redact_keys(a.agent) if a.agent else None
    fields = {
        "request_id": a.request_id,
        "client": a.client,
        "method": a.method,
        "target": target,
        "route": a.route,
        "status": a.status,
        "outcome": a.outcome,
        "key_id": a.key_id,
        "user_id": a.user_id,
        "upstream_status": a.upstream_status,
        "bytes": a.bytes,
        "duration_ms": _ms(a.total),
        "upstream_ms": _ms(a.upstream),
        "auth_ms": _ms(a.auth),
        "referer": referer,
        "user_agent": agent,
    }
    logger.info(
        '%s [%s] "%s %s HTTP/1.1" %d %d "%s" "%s" id=%s route=%s outcome=%s key=%s user=%s '
        "upstream=%s ms=%s upstream_ms=%s auth_ms=%s",
        a.client or "-",
        time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        a.method,
        target,
        a.status,
        a.bytes,
        referer or "-",
        agent or "-",
        a.request_id,
        a.route,
        a.outcome,
        a.key_id or "-",
        a.user_id or "-",
        a.upstream_status or "-",
        fields["duration_ms"],
        fields["upstream_ms"] if a.upstream is not None else "-",
        fields["auth_ms"] if a.auth is not None else "-",
        extra={"access": fields},
    )


@dataclass(slots=True)
class Exchange:
    """What the aiohttp server learns about one request while answering it, for the access
    log and metrics (the data-plane handler fills in the decision and the upstream)."""

    request_id: str
    started: float
    route: str | None = None
    outcome: str | None = None
    key_id: str | None = None
    user_id: str | None = None
    upstream_status: int | None = None
    upstream: float | None = None
    auth: float | None = None
    span: Any = None  # tracing.Span, while tracing is on

    def upstream_headers(self) -> list[tuple[str, str]]:
        """What the gateway adds to the forwarded request: the id and the trace context."""
        out = [(REQUEST_ID, self.request_id)]
        if self.span is not None:
            out.extend(self.span.headers())
        return out


EXCHANGE = web.RequestKey("exchange", Exchange)

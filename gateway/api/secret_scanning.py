"""`POST /v1/secret-scanning/github`: GitHub's secret scanning partner program.

GitHub POSTs a signed JSON list of tokens it found in public places. The request is checked
in this order, each failure answered before anything further is read or written:

1. both signature headers present, and the signature (ECDSA P-256, SHA-256, over the raw
   body) valid under the named key: else 401 `bad-signature`. An unknown key identifier
   refreshes the keys from `secret_scanning_keys_url` (at most once a minute) first;
2. not a replay (the body and signature are remembered for `secret_scanning_replay_window`,
   in the database, so every instance knows): else 409 `report-replayed`;
3. a readable report: else 422.

Then every token is answered (`keys/disclose.py`) in the program's format. Where the
deployment configured no signing keys the endpoint answers 404 `secret-scanning-off`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.api.body import read_body
from gateway.api.render import add_routes, json_response
from gateway.errors import Conflict, Invalid, NotFound, Unauthenticated
from gateway.keys import disclose
from gateway.keys.leaks import (
    PublicKeys,
    ReportError,
    SignatureError,
    answer,
    parse_report,
    report_digest,
)
from gateway.settings import Settings
from gateway.state import SERVICES, SETTINGS

log = logging.getLogger("gateway.api")

PATH = "/v1/secret-scanning/github"
ACTOR = "system:secret-scanning"
IDENTIFIER = "Github-Public-Key-Identifier"
SIGNATURE = "Github-Public-Key-Signature"
REFRESH_EVERY = 60.0
FETCH_TIMEOUT = 5.0
MAX_KEYS_DOCUMENT = 256 * 1024


@dataclass(slots=True)
class SigningKeys:
    """The keys reports may be signed with: the configured file's, plus the URL's (refreshed
    when a report names a key not known yet, at most every REFRESH_EVERY seconds)."""

    configured: PublicKeys
    url: str | None
    fetched: PublicKeys = field(default_factory=lambda: PublicKeys({}))
    next_refresh: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKeys | None:
        path: Path | None = settings.secret_scanning_keys_file
        if path is None and settings.secret_scanning_keys_url is None:
            return None
        configured = PublicKeys({})
        if path is not None:  # checked when the settings were read
            configured = PublicKeys.from_document(json.loads(path.read_text(encoding="utf-8")))
        return cls(configured, settings.secret_scanning_keys_url)

    def _current(self) -> PublicKeys:
        return PublicKeys({**self.fetched.keys, **self.configured.keys})

    async def verify(self, body: bytes, identifier: str, signature: str) -> None:
        if not self._current().knows(identifier) and self.url is not None:
            await self._refresh()
        self._current().verify(body, identifier, signature)

    async def _refresh(self) -> None:
        async with self.lock:
            if time.monotonic() < self.next_refresh:
                return
            self.next_refresh = time.monotonic() + REFRESH_EVERY
            assert self.url is not None
            try:
                timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(self.url) as response,
                ):
                    response.raise_for_status()
                    raw = await response.content.read(MAX_KEYS_DOCUMENT + 1)
                if len(raw) > MAX_KEYS_DOCUMENT:
                    raise ValueError("the document is too large")
                self.fetched = PublicKeys.from_document(json.loads(raw))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("could not refresh the secret scanning keys: %s", exc)


SIGNING_KEYS = web.AppKey("secret_scanning_keys", SigningKeys)


async def github_report(request: web.Request) -> web.StreamResponse:
    identifier = request.headers.get(IDENTIFIER, "")
    signature = request.headers.get(SIGNATURE, "")
    if not identifier or not signature:  # refused alike whether scanning is on or not
        raise _refused(f"{IDENTIFIER} and {SIGNATURE} are required")
    keys = request.app.get(SIGNING_KEYS)
    if keys is None:
        raise NotFound(
            "secret scanning is not configured on this deployment", code="secret-scanning-off"
        )
    body = await read_body(request)
    try:
        await keys.verify(body, identifier, signature)
    except SignatureError as exc:
        raise _refused(str(exc)) from None
    settings = request.app[SETTINGS]
    services = request.app[SERVICES]
    now = datetime.now(UTC)
    window = timedelta(seconds=settings.secret_scanning_replay_window)
    if not await services.store.remember_report(report_digest(body, signature), now, now - window):
        raise Conflict("this report was already received", code="report-replayed")
    try:
        findings = parse_report(body)
    except ReportError as exc:
        raise Invalid([("body", str(exc))]) from None
    results = await disclose.respond(services, findings, actor=ACTOR, source="github")
    return json_response([answer(finding, label) for finding, label, _ in results])


def _refused(reason: str) -> Unauthenticated:
    # No WWW-Authenticate: no credential of ours would help, only GitHub's signature.
    return Unauthenticated(
        f"the report's signature is not valid: {reason}", code="bad-signature", headers={}
    )


def setup(app: web.Application) -> None:
    keys = SigningKeys.from_settings(app[SETTINGS])
    if keys is not None:
        app[SIGNING_KEYS] = keys
    add_routes(app, "problem", PATH, {"POST": github_report})

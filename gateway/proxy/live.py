"""Live exchanges follow their key: WebSockets and streams that outlive one read.

A request is decided once, when it arrives; a WebSocket or a long stream may then run for
hours. So the exchanges that outlive one read (WebSocket proxies, responses streamed after
their head, request bodies still arriving when they are forwarded) are registered here by
their key's hash while they run. When an invalidation reaches this instance — the verifier's
`drop` or `reset`, whichever channel delivered it — every affected exchange decides again,
from its own request line and headers, through the verifier and the current policy, and is
cut only if it is no longer allowed: removing a grant it does not rely on leaves it alone.
A re-check that cannot reach the key's record (database and Redis down, entry dropped) cuts:
never fail open.

A small answer that arrives whole is never registered, so the hot path pays nothing. Only
key-authenticated exchanges are registered: a password is not kept to be checked again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.credentials import KeyCredential, extract
from gateway.errors import GatewayError
from gateway.proxy.client_address import resolve
from gateway.proxy.decision import Allowed, HeaderValues, NeedsLookup, decide, resume

if TYPE_CHECKING:
    from gateway.policy.evaluate import Principal
    from gateway.services import Services

log = logging.getLogger("gateway.proxy")

Cut = Callable[[], None]
"""Ends an exchange at once (close a WebSocket with 1008, or cut a stream's connections)."""


class LiveExchange:
    """One registered exchange: enough of its request to decide it again, and its cut."""

    __slots__ = ("again", "checking", "cut", "digest", "method", "peer", "target", "values")

    def __init__(
        self,
        method: str,
        target: str,
        values: HeaderValues,
        digest: bytes,
        cut: Cut,
        peer: str | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.values = values
        self.peer = peer  # the socket peer, for the key's IP allow-list
        self.digest = digest
        self.cut = cut  # replaceable: a forwarded upload becomes a streamed response
        self.checking = False  # a re-check is running
        self.again = False  # another invalidation came during it: check once more after

    def __repr__(self) -> str:  # never the headers (they carry the key)
        return f"LiveExchange({self.method} {self.target})"


class LiveExchanges:
    """The registry of one worker, notified by its `KeyVerifier` (`watcher`)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._by_digest: dict[bytes, set[LiveExchange]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        services.verifier.watcher = self

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_digest.values())

    def watch(
        self,
        method: str,
        target: str,
        values: HeaderValues,
        principal: Principal | None,
        cut: Cut,
        peer: str | None = None,
    ) -> LiveExchange | None:
        """Register an allowed exchange authenticated by a key; None for any other (a route
        without authentication, a password), which has nothing to follow."""
        if principal is None or principal.key_id is None:
            return None
        try:
            credential = extract(values("Authorization"), values("X-API-KEY"))
            if not isinstance(credential, KeyCredential):
                return None
            verifier = self._services.verifier
            digest = verifier.digest(credential.key)
            current = verifier.known(digest)
        except GatewayError:
            current = None
            digest = b""
        exchange = LiveExchange(method, target, values, digest, cut, peer)
        self._by_digest.setdefault(digest, set()).add(exchange)
        # An invalidation may have come between the decision and now (the upstream's answer
        # can take seconds): the entry it was allowed by is then gone, so decide again.
        if current is None or current is not principal:
            self._check(exchange)
        return exchange

    def unwatch(self, exchange: LiveExchange | None) -> None:
        if exchange is None:
            return
        group = self._by_digest.get(exchange.digest)
        if group is not None:
            group.discard(exchange)
            if not group:
                del self._by_digest[exchange.digest]

    # the verifier's notices --------------------------------------------------------------

    def changed(self, digest: bytes) -> None:
        """One key's cached record was dropped: its exchanges decide again."""
        group = self._by_digest.get(digest)
        if group:
            for exchange in list(group):
                self._check(exchange)

    def changed_all(self) -> None:
        """Every cached record became suspect: every exchange decides again."""
        for group in list(self._by_digest.values()):
            for exchange in list(group):
                self._check(exchange)

    # re-checking -----------------------------------------------------------------------------

    def _check(self, exchange: LiveExchange) -> None:
        if exchange.checking:
            exchange.again = True
            return
        exchange.checking = True
        task = asyncio.get_running_loop().create_task(self._recheck(exchange))
        self._tasks.add(task)  # kept referenced: the loop holds tasks only weakly
        task.add_done_callback(self._tasks.discard)

    async def _recheck(self, exchange: LiveExchange) -> None:
        try:
            while True:
                exchange.again = False
                allowed = await self.allowed(exchange)
                if not allowed:
                    self._cut(exchange)
                    return
                if not exchange.again:
                    return
        finally:
            exchange.checking = False

    async def allowed(self, exchange: LiveExchange) -> bool:
        """Whether the exchange's request would be allowed now (decided as a new one)."""
        services = self._services
        try:
            policy, verifier = services.policy, services.verifier
            trusted = services.settings.trusted_proxies

            def address() -> str:
                return resolve(exchange.values, exchange.peer, trusted)

            decision = decide(
                policy, verifier, exchange.method, exchange.target, exchange.values, address
            )
            if isinstance(decision, NeedsLookup):
                credential = decision.credential
                if not isinstance(credential, KeyCredential) or decision.digest is None:
                    return False
                found = await verifier.lookup(credential.key, decision.digest)
                decision = resume(decision, found, address)
        except GatewayError as exc:
            log.info("live %s %s re-checked: %s", exchange.method, _path(exchange), exc.code)
            return False
        if not isinstance(decision, Allowed):
            log.info(
                "live %s %s re-checked: %s", exchange.method, _path(exchange), decision.outcome
            )
            return False
        return True

    def _cut(self, exchange: LiveExchange) -> None:
        self.unwatch(exchange)
        try:
            exchange.cut()
        except Exception:  # one exchange's cut must not stop the others'
            log.exception("cutting a live exchange failed")


def _path(exchange: LiveExchange) -> str:
    return exchange.target.split("?", 1)[0][:200]  # no query: it may carry anything

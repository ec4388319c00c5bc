"""What the fast front's connections of one worker share (`FrontContext`), and the one
sweep that keeps their client deadlines."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from gateway.proxy.busy_poll import BusyPoll
from gateway.proxy.forward import Forwarder
from gateway.proxy.h1.limits import Limits
from gateway.services import Services


class Served(Protocol):
    """A connection the front serves itself (not handed over)."""

    def check_deadline(self, now: float) -> None: ...

    def drain(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ClientDeadlines:
    """Settings `client_header_timeout`, `client_body_timeout`, `keepalive_timeout`."""

    header: float = 10.0
    body: float = 30.0
    idle: float = 75.0


@dataclass(slots=True)
class FrontContext:
    """What every connection of one worker shares."""

    services: Services
    forwarder: Forwarder
    internal: tuple[str, int]  # the aiohttp listener connections are handed over to
    exact: frozenset[str]  # the gateway's own paths ...
    prefixes: tuple[str, ...]  # ... and path prefixes (from the aiohttp router)
    peers: dict[int, str] = field(default_factory=dict)  # internal local port -> client address
    access_log: logging.Logger | None = None  # setting `access_log`: one line per request
    limits: Limits = field(default_factory=Limits)
    deadlines: ClientDeadlines = field(default_factory=ClientDeadlines)
    max_connections: int = 10_000
    open: int = 0  # client connections open, handed-over ones included
    # The loop's clock as of the last sweep: connections note when a deadline starts from it
    # (an attribute read, not a clock call per request). It lags by at most one sweep, so a
    # deadline fires between its limit and its limit plus two sweeps.
    now: float = 0.0
    connections: set[Served] = field(default_factory=set)  # served here, for deadlines
    draining: bool = False  # stopping: answer what is in flight, take no new requests
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # draining, none left open
    busy_poll: BusyPoll | None = None  # setting `busy_poll_us` (busy_poll.py); None: off

    def sweep(self, now: float) -> None:
        """Close connections whose deadline has passed (called about four times a deadline)."""
        for protocol in list(self.connections):
            protocol.check_deadline(now)


class Sweeper:
    """Client deadlines, checked by one periodic sweep per worker: a timer per connection
    would cost a heap operation each way on every request. A deadline fires up to a quarter
    of the shortest one late (at most a second)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ctx: FrontContext) -> None:
        deadlines = ctx.deadlines
        shortest = min(deadlines.header, deadlines.body, deadlines.idle)
        self._every = min(1.0, max(0.05, shortest / 4))
        self._loop = loop
        self._ctx = ctx
        ctx.now = loop.time()
        self._handle = loop.call_later(self._every, self._run)

    def _run(self) -> None:
        now = self._ctx.now = self._loop.time()
        self._ctx.sweep(now - self._every)  # `since` values lag by up to one sweep
        self._handle = self._loop.call_later(self._every, self._run)

    def stop(self) -> None:
        self._handle.cancel()

"""Bad clients for the slow-client scenario: `python -m bench.badclients PORT [options]`.

Opens `--idle` connections that send nothing and `--trickle` connections that send a request
line, then one header line every `--every` seconds, never finishing the head. All run in this
one asyncio process, one protocol object per socket and one timer per trickling connection (no
task per connection), at a lower CPU priority, so the gateway's core is left to the gateway.

Prints one JSON line when every connection is open (`{"ready": ...}`), holds them until the
gateway has ended them all or `--hold` seconds have passed, then prints one JSON line with
every connection's kind, lifetime and ending (bench/lifetimes.py) and the CPU this process
used. Only 127.0.0.1 is contacted; the whole run is bounded by `--hold` plus the connect ramp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import sys
import time

from bench.lifetimes import STILL_OPEN, Ended, ending

IDLE = "idle"
TRICKLE = "trickling"
CONNECT_BATCH = 100  # connects in flight at once: stays well inside the listen backlog
CONNECT_SECONDS = 10.0  # per batch
KEEP_BYTES = 64  # of the gateway's first bytes: enough for a status line


class Tally:
    """Connections still open; `done` is set once the ramp is over and none is left."""

    def __init__(self) -> None:
        self.open = 0
        self.ramped = False
        self.done = asyncio.Event()

    def ended(self) -> None:
        self.open -= 1
        if self.ramped and self.open <= 0:
            self.done.set()

    def ramp_over(self) -> None:
        self.ramped = True
        if self.open <= 0:
            self.done.set()


class BadClient(asyncio.Protocol):
    """One bad connection; it notes when and how the gateway ended it."""

    def __init__(self, kind: str, head: bytes, every: float, tally: Tally) -> None:
        self.kind = kind
        self.head = head
        self.every = every
        self.tally = tally
        self.transport: asyncio.Transport | None = None
        self.opened = 0.0
        self.closed: float | None = None
        self.first = b""
        self.reset = False
        self.lines = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.opened = time.monotonic()
        if self.kind == TRICKLE:
            transport.write(self.head)
            self.timer = asyncio.get_running_loop().call_later(self.every, self.trickle)

    def trickle(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.lines += 1
        self.transport.write(f"X-Trickle-{self.lines}: {self.lines}\r\n".encode())
        self.timer = asyncio.get_running_loop().call_later(self.every, self.trickle)

    def data_received(self, data: bytes) -> None:
        if len(self.first) < KEEP_BYTES:
            self.first += data[: KEEP_BYTES - len(self.first)]

    def eof_received(self) -> bool:
        self._ended()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ConnectionResetError):
            self.reset = True
        self._ended()

    def _ended(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.closed is None:
            self.closed = time.monotonic()
            self.tally.ended()

    def record(self, now: float) -> Ended:
        if self.closed is None:
            return Ended(self.kind, now - self.opened, STILL_OPEN)
        return Ended(self.kind, self.closed - self.opened, ending(self.first, self.reset))


def raise_nofile(need: int) -> int:
    """Raise the soft open-file limit towards `need` (never past the hard one); the new soft limit.

    Child processes inherit it, which is how the gateway started by the scenario gets room for
    the bad connections on top of its own.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def _same(client: BadClient) -> BadClient:
    return client


async def hold(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    head = f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n".encode()
    kinds = [TRICKLE] * args.trickle + [IDLE] * args.idle
    tally = Tally()
    clients: list[BadClient] = []
    failed = 0
    started = time.monotonic()
    for at in range(0, len(kinds), CONNECT_BATCH):
        batch = [
            BadClient(kind, head, args.every, tally) for kind in kinds[at : at + CONNECT_BATCH]
        ]
        connects = [
            asyncio.wait_for(
                loop.create_connection(functools.partial(_same, c), "127.0.0.1", args.port),
                CONNECT_SECONDS,
            )
            for c in batch
        ]
        for client, outcome in zip(
            batch, await asyncio.gather(*connects, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, BaseException):
                failed += 1
            else:
                clients.append(client)
                tally.open += 1
    ramp = time.monotonic() - started
    print(json.dumps({"ready": len(clients), "failed": failed, "ramp": ramp}), flush=True)
    tally.ramp_over()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.done.wait(), args.hold)
    now = time.monotonic()
    records = [c.record(now) for c in clients]
    for c in clients:
        if c.transport is not None and c.closed is None:
            c.transport.abort()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "connections": [[r.kind, round(r.seconds, 4), r.how] for r in records],
        "failed": failed,
        "ramp": ramp,
        "cpu": usage.ru_utime + usage.ru_stime,
        "wall": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.badclients")
    parser.add_argument("port", type=int)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--trickle", type=int, default=300)
    parser.add_argument("--every", type=float, default=4.0)
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--path", default="/api/items?page=1")
    parser.add_argument("--nice", type=int, default=10, help="CPU priority offset (0: none)")
    args = parser.parse_args(argv)
    raise_nofile(args.idle + args.trickle + 64)
    if args.nice:
        os.nice(args.nice)
    print(json.dumps(asyncio.run(hold(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

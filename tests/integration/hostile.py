"""Tools of the hostile-client suites (test_hostile_*.py): a recording upstream that keeps
every request exactly as the gateway sent it, a raw client whose every wait has a deadline,
and a verdict that compares what happened to what must happen, one line per attack.

Each suite starts one gateway per server and runs a table of attacks against it, each on a
fresh connection, so a hang fails fast and a process start is paid once per table; the table's
failures are reported together (`assert failures == {}` shows them all).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from tests.integration.gateways import Gateway
from tests.integration.upstream import RawUpstream

DEADLINE = 3.0  # seconds any single exchange may take; a hang is a failure, not a wait


@dataclass
class Seen:
    """One whole request as the upstream received it (body de-chunked)."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Recorder:
    """A keep-alive upstream answering `200 ok` to each request; `started` counts requests of
    which any byte arrived, `seen` the ones that arrived whole."""

    seen: list[Seen] = field(default_factory=list)
    started: int = 0
    server: RawUpstream = field(init=False)

    def __post_init__(self) -> None:
        self.server = RawUpstream(self._talk)

    def clear(self) -> None:
        self.seen.clear()
        self.started = 0

    def summary(self) -> list[str]:
        return [f"{s.method} {s.target}" for s in self.seen]

    async def _talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while first := await reader.read(1):
            self.started += 1
            head = first + await reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [(n, v.strip(" \t")) for n, _, v in (x.partition(":") for x in lines[1:])]
            codings = [v.lower() for n, v in headers if n.lower() == "transfer-encoding"]
            lengths = [v for n, v in headers if n.lower() == "content-length"]
            if codings:
                body = await _dechunk(reader)
            else:
                body = await reader.readexactly(int(lengths[0])) if lengths else b""
            self.seen.append(Seen(method, target, headers, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()


async def _dechunk(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def build(
    method: str,
    target: str,
    *headers: str,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: bool = True,
    eol: str = "\r\n",
) -> bytes:
    """A request's bytes exactly as given: no header is added but `Host` (unless host=False)."""
    lines = [f"{method} {target} {version}", *(["Host: gateway.test"] if host else []), *headers]
    return (eol.join(lines) + eol + eol).encode("latin-1") + body


@dataclass
class Outcome:
    """What one attack produced: the client's side and the upstream's."""

    statuses: list[int]  # every response status the client read, interim ones included
    closed: bool  # the gateway closed the connection within the deadline
    upstream: list[str]  # whole requests the upstreams received: "METHOD target"
    started: int  # requests of which the recording upstream received any byte
    raw: bytes = b""

    @property
    def final(self) -> int | None:
        finals = [s for s in self.statuses if s >= 200]
        return finals[0] if finals else None


def statuses_in(raw: bytes) -> list[int]:
    """Status codes of the response heads in `raw` (bodies are skipped by Content-Length)."""
    found = []
    while raw.startswith(b"HTTP/"):
        head, sep, raw = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        try:
            found.append(int(lines[0].split(b" ")[1]))
        except (IndexError, ValueError):
            break
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value)
        raw = raw[length:]
        if not sep:
            break
    return found


async def exchange(
    gw: Gateway, recorder: Recorder | None, data: bytes, *, seconds: float = DEADLINE
) -> Outcome:
    """Send `data` on a new connection, read until the gateway closes it or `seconds` pass."""
    if recorder is not None:
        recorder.clear()
    gw.upstream.received.clear()
    received, closed = b"", False
    async with asyncio.timeout(seconds):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                with contextlib.suppress(ConnectionError):
                    writer.write(data)
                    await writer.drain()
                try:
                    while chunk := await reader.read(65536):
                        received += chunk
                    closed = True
                except ConnectionError:
                    closed = True
    finally:
        writer.close()
    await asyncio.sleep(0.05)  # a request the gateway forwarded after answering shows now
    upstream = [f"{r.method} {r.target}" for r in gw.upstream.received]
    if recorder is not None:
        upstream += recorder.summary()
    return Outcome(
        statuses_in(received),
        closed,
        upstream,
        recorder.started if recorder else 0,
        received,
    )


@dataclass(frozen=True)
class Expect:
    """What must happen: the final status (one of `status`), whether the connection ends,
    and the whole requests the upstream receives (nothing unless listed). With
    `upstream_may_start`, part of a request may reach it (a streamed body that turns out bad),
    never a whole one."""

    status: tuple[int, ...]
    closed: bool = True
    upstream: tuple[str, ...] = ()
    upstream_may_start: bool = False

    def verdict(self, got: Outcome) -> str:
        """ "ok", or what differed."""
        problems = []
        if got.final not in self.status:
            problems.append(
                f"status {got.statuses or 'none'} (want {'|'.join(map(str, self.status))})"
            )
        if any(100 <= s < 200 for s in got.statuses) and 101 not in self.status:
            problems.append(f"interim response {got.statuses}")
        if self.closed and not got.closed:
            problems.append("connection left open")
        if list(self.upstream) != got.upstream:
            problems.append(f"upstream got {got.upstream} (want {list(self.upstream)})")
        elif not self.upstream and got.started and not self.upstream_may_start:
            problems.append(f"upstream got the start of {got.started} request(s)")
        return "; ".join(problems) or "ok"


async def run_table(
    gw: Gateway, recorder: Recorder, table: dict[str, tuple[bytes, Expect]]
) -> dict[str, str]:
    """Each attack on its own connection; the ones whose outcome differs, with how."""
    failures = {}
    for name, (data, expect) in table.items():
        verdict = expect.verdict(await exchange(gw, recorder, data))
        if verdict != "ok":
            failures[name] = verdict
    return failures


def refused(*status: int) -> Expect:
    """Answered `status`, connection closed, nothing upstream."""
    return Expect(status)


def forwarded(method: str, target: str) -> Expect:
    """Answered 200 by the upstream, which received exactly this one request."""
    return Expect((200,), upstream=(f"{method} {target}",))


def describe(failures: dict[str, str]) -> str:
    """One line per failed attack, for the assertion message."""
    return "attacks not handled as required:\n" + "\n".join(
        f"  {name}: {what}" for name, what in failures.items()
    )

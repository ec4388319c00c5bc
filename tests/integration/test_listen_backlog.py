"""Setting `listen_backlog` on a real `gateway serve`, on both servers: the kernel queues that
many new connections while no worker accepts (here: its one worker stopped with SIGSTOP).

Both servers listen on the master's socket again when they start (uvloop's create_server with
100, aiohttp's site with 128 unless told otherwise); a burst of new connections beyond that
had its SYNs dropped and waited 1 s, then 3 s, for the kernel to retry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
from pathlib import Path

import pytest

from tests.integration.serving import environment, policy_text, serve
from tests.integration.upstream import EchoUpstream

BURST = 600  # new connections at once: over the servers' own defaults, under 1024
SETTLE = 0.5  # seconds: the kernel completes a queued handshake at once


async def connected(port: int, count: int) -> int:
    """How many of `count` connections opened at once complete the handshake.

    The kernel does the handshakes, not this process: a stall here (a collection in a long
    test run) changes nothing. While nobody accepts, a dropped SYN is dropped again when it is
    retried, so the count holds however long the wait."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        await asyncio.sleep(SETTLE)
        poller = select.poll()
        for sock in socks:
            poller.register(sock, select.POLLOUT)
        writable = {fd for fd, events in poller.poll(0) if events == select.POLLOUT}
        return sum(
            sock.fileno() in writable and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            for sock in socks
        )
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("fast", ["true", "false"])
@pytest.mark.parametrize(("backlog", "queued"), [(None, BURST), ("200", 201)])
async def test_the_kernel_queues_listen_backlog_connections(
    tmp_path: Path, fast: str, backlog: str | None, queued: int
) -> None:
    """With the default (1024) the whole burst is queued; with 200, 201 of it (Linux queues
    one more than the backlog) and the rest waits for a retry."""
    async with EchoUpstream() as upstream:
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_text(upstream.url))
        settings = {"GATEWAY_FAST_DATA_PLANE": fast}
        if backlog is not None:
            settings["GATEWAY_LISTEN_BACKLOG"] = backlog
        with serve(environment(tmp_path, policy, **settings), tmp_path) as served:
            await served.wait_serving()
            (worker,) = served.workers()
            os.kill(worker, signal.SIGSTOP)  # nobody accepts: every connection stays queued
            try:
                count = await connected(served.port, BURST)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGCONT)
    assert count == queued

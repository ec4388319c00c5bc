"""Setting `listen_backlog` on a real `gateway serve`, on both servers: the kernel queues that
many new connections while no worker accepts (here: its one worker stopped with SIGSTOP).

Both servers listen on the master's socket again when they start (uvloop's create_server with
100, aiohttp's site with 128 unless told otherwise); a burst of new connections beyond that
had its SYNs dropped and waited 1 s, then 3 s, for the kernel to retry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.integration.serving import environment, policy_text, serve
from tests.integration.upstream import EchoUpstream

BURST = 600  # new connections at once: over the servers' own defaults, under 1024
CONNECT_SECONDS = 0.5  # a dropped SYN is retried after 1 s: a queued one connects at once


async def connected(port: int, count: int) -> int:
    """How many of `count` connections opened at once complete the handshake in time."""

    async def one() -> asyncio.StreamWriter | None:
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                return (await asyncio.open_connection("127.0.0.1", port))[1]
        except (TimeoutError, OSError):
            return None

    writers = await asyncio.gather(*(one() for _ in range(count)))
    for writer in writers:
        if writer is not None:
            writer.close()
    return sum(writer is not None for writer in writers)


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

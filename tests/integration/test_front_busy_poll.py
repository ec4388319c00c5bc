"""Setting `busy_poll_us` on a real `gateway serve` process: with it, the worker keeps
polling between requests that come closer together than the window (its CPU time grows with
the wall clock) and sleeps again once they stop; without it, the same requests leave the
worker mostly asleep. Generous bounds on CPU shares; never on speed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.integration.gateways import Gateway, MakeGateway

pytestmark = pytest.mark.server("front", reason="busy polling is the fast front's")

TICKS = os.sysconf("SC_CLK_TCK")
WINDOW_US = 10_000  # the worker polls 10 ms after each request and each answer
GAP = 0.004  # seconds between requests: well inside the window


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def cpu_share(gw: Gateway, seconds: float, *, requests: bool) -> float:
    """The worker's CPU time over wall time while `requests` come one every GAP (or none)."""
    pid = gw.pid
    wall, cpu = time.monotonic(), cpu_seconds(pid)
    while time.monotonic() - wall < seconds:
        if requests:
            async with gw.client.get("/api/x", headers=gw.auth) as resp:
                assert resp.status == 200
                await resp.read()
        await asyncio.sleep(GAP)
    return (cpu_seconds(pid) - cpu) / (time.monotonic() - wall)


async def test_busy_poll_spends_cpu_between_close_requests_then_sleeps(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(busy_poll_us=str(WINDOW_US))
    await cpu_share(gw, 0.2, requests=True)  # warm: the upstream connection, the key cache
    polling = await cpu_share(gw, 1.0, requests=True)
    await asyncio.sleep(0.2)  # many windows without a request
    quiet = await cpu_share(gw, 1.0, requests=False)
    assert polling > 0.6, f"the worker slept between requests ({polling:.0%} CPU)"
    assert quiet < 0.1, f"the worker kept polling with no requests ({quiet:.0%} CPU)"


async def test_without_busy_poll_the_worker_sleeps_between_requests(
    make_gateway: MakeGateway,
) -> None:
    """The control: the same requests cost a fraction of the worker's time when it sleeps."""
    gw = await make_gateway()
    await cpu_share(gw, 0.2, requests=True)
    share = await cpu_share(gw, 1.0, requests=True)
    assert share < 0.4, f"{share:.0%} CPU for a request every {GAP * 1000:g} ms"

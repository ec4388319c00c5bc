"""`BusyPoll` (setting `busy_poll_us`) on a real event loop: a tick starts the poll, ticks
inside the window keep it going, and a window without one lets the loop sleep again."""

from __future__ import annotations

import asyncio
import time

from gateway.proxy.busy_poll import BusyPoll

WINDOW_US = 20_000  # 20 ms: long enough that a loaded machine's scheduling cannot end it early


async def test_a_tick_polls_until_a_quiet_window_passes() -> None:
    poll = BusyPoll(asyncio.get_running_loop(), WINDOW_US)
    assert poll.idle, "nothing polls before the first request"
    poll.tick()
    assert not poll.idle
    await asyncio.sleep(0.005)
    assert not poll.idle, "stopped inside the window"
    await asyncio.sleep(0.2)  # ten windows without a tick
    assert poll.idle


async def test_ticks_inside_the_window_keep_it_polling() -> None:
    poll = BusyPoll(asyncio.get_running_loop(), WINDOW_US)
    poll.tick()
    started = time.monotonic()
    while time.monotonic() - started < 0.1:  # five windows, a tick every 5 ms
        await asyncio.sleep(0.005)
        assert not poll.idle
        poll.tick()
    assert poll.ticks > 10
    await asyncio.sleep(0.2)
    assert poll.idle
    poll.tick()  # the next request starts it again
    assert not poll.idle
    await asyncio.sleep(0.2)
    assert poll.idle


async def test_polling_keeps_the_loop_awake_and_stops_costing_when_quiet() -> None:
    """While polling the loop turns without sleeping: the process's CPU time grows with the
    wall clock. Once the window has passed it sleeps: CPU time stands still."""
    poll = BusyPoll(asyncio.get_running_loop(), WINDOW_US)
    poll.tick()
    wall, cpu = time.monotonic(), time.process_time()
    await asyncio.sleep(0.015)  # inside the window
    busy = (time.process_time() - cpu) / (time.monotonic() - wall)
    await asyncio.sleep(0.1)
    assert poll.idle
    wall, cpu = time.monotonic(), time.process_time()
    await asyncio.sleep(0.2)
    quiet = (time.process_time() - cpu) / (time.monotonic() - wall)
    assert busy > 0.5, f"the loop slept while polling ({busy:.0%} CPU)"
    assert quiet < 0.2, f"the loop kept turning after the window ({quiet:.0%} CPU)"

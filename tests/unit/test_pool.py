"""The upstream pool's fairness (gateway.proxy.client.Pool): a freed connection or slot goes to
the oldest waiter directly, the task-free fast path never overtakes a queue, and the wait's
deadline counts from arrival. On a real event loop, with unconnected `Connection`s: opening a
connection is the only step replaced (no sockets)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.model import Upstream
from gateway.proxy.client import Pool
from gateway.proxy.connection import Connection
from gateway.proxy.upstream_http import UpstreamTimeout, UpstreamUnreachable


class Opener:
    """Opens unconnected `Connection`s after one loop pass (or fails, with `refuse`)."""

    def __init__(self) -> None:
        self.opened = 0
        self.refuse = False

    async def __call__(self, pool: Pool) -> Connection:
        await asyncio.sleep(0)
        if self.refuse:
            raise ConnectionRefusedError
        self.opened += 1
        return Connection(pool, pool.loop, pool.host_header, pool.read_timeout)


def opening(size: int, connect_timeout: float = 5.0) -> tuple[Pool, Opener]:
    upstream = Upstream("u", "http://127.0.0.1:9", connect_timeout, 5.0, size)
    opener = Opener()
    return Pool(upstream, asyncio.get_running_loop(), None, opener), opener


def broken(conn: Connection) -> Connection:
    """`conn` as after a failed exchange: not fit for reuse."""
    conn._lost = True
    return conn


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_released_connection_goes_to_the_oldest_waiter() -> None:
    """Waiters are served in arrival order, each with the connection just released."""
    pool, opener = opening(size=1)
    first, _ = await pool.acquire()
    order: list[int] = []

    async def wait(n: int) -> Connection:
        conn, reused = await pool.acquire()
        assert reused
        order.append(n)
        return conn

    tasks = []
    for n in range(5):
        tasks.append(asyncio.create_task(wait(n)))
        await settle()
    assert pool.waiting == 5
    conn = first
    for task in tasks:
        pool.release(conn)
        conn = await task
        assert conn is first
    assert order == [0, 1, 2, 3, 4]
    assert opener.opened == 1


async def test_the_fast_path_never_overtakes_a_queue() -> None:
    """While a request waits, `take_idle` finds nothing, even the instant a connection is
    released: the connection is already the waiter's."""
    pool, _ = opening(size=1)
    conn, _ = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await settle()
    pool.release(conn)
    assert pool.take_idle() is None
    assert await waiter == (conn, True)
    pool.release(conn)
    assert pool.take_idle() is conn  # nobody waits: the fast path takes it


async def test_a_newcomer_queues_behind_waiters_even_with_a_slot_free() -> None:
    """A slot freed by a closed connection goes to the oldest waiter; a request arriving then
    does not open a connection of its own ahead of it."""
    pool, opener = opening(size=1)
    conn, _ = await pool.acquire()
    older = asyncio.create_task(pool.acquire())
    await settle()
    pool.release(broken(conn))  # the slot is handed over, still counted
    newer = asyncio.create_task(pool.acquire())
    await settle()
    new_conn, reused = await older
    assert not reused
    assert new_conn is not conn
    assert not newer.done()
    pool.release(new_conn)
    assert await newer == (new_conn, True)
    assert opener.opened == 2


async def test_the_wait_deadline_counts_from_arrival() -> None:
    """A waiter that nothing reaches gets UpstreamTimeout after `connect_timeout` from its
    arrival, and leaves the queue."""
    pool, _ = opening(size=1, connect_timeout=0.2)
    await pool.acquire()
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamTimeout):
        await pool.acquire()
    assert 0.15 <= asyncio.get_running_loop().time() - started < 1.0
    assert pool.waiting == 0


async def test_a_waiter_cancelled_after_the_hand_over_passes_it_on() -> None:
    """A connection handed to a waiter that is cancelled before it runs goes to the next."""
    pool, _ = opening(size=1)
    conn, _ = await pool.acquire()
    first = asyncio.create_task(pool.acquire())
    second = asyncio.create_task(pool.acquire())
    await settle()
    pool.release(conn)
    first.cancel()  # handed the connection, but not yet resumed
    assert await second == (conn, True)
    assert first.cancelled()


async def test_a_fresh_request_takes_the_slot_of_an_idle_connection() -> None:
    """`fresh` (a resend after a stale connection) on a full pool of idle connections closes
    one and opens a new one instead of waiting for a slot nobody will free."""
    pool, opener = opening(size=1)
    conn, _ = await pool.acquire()
    pool.release(conn)
    new, reused = await asyncio.wait_for(pool.acquire(fresh=True), 1)
    assert new is not conn
    assert not reused
    assert opener.opened == 2


async def test_a_slot_whose_connection_fails_to_open_passes_to_the_next_waiter() -> None:
    """A waiter handed a slot that cannot connect gets its error; the slot goes on to the
    next waiter, and the count of open connections never leaks."""
    pool, opener = opening(size=1)
    conn, _ = await pool.acquire()
    first = asyncio.create_task(pool.acquire())
    second = asyncio.create_task(pool.acquire())
    await settle()
    opener.refuse = True
    pool.release(broken(conn))
    with pytest.raises(UpstreamUnreachable):
        await first
    opener.refuse = False
    new, reused = await second
    assert not reused
    assert new is not conn
    assert pool.waiting == 0


# -- the property ------------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.just(("arrive",)),
        st.tuples(st.just("done"), st.booleans()),  # the oldest holder finishes: reusable?
        st.tuples(st.just("cancel"), st.integers(0, 20)),  # a waiter gives up
    ),
    max_size=40,
)


async def run_schedule(size: int, schedule: list[tuple[object, ...]]) -> None:
    pool, _ = opening(size)
    arrived: list[asyncio.Task[tuple[Connection, bool]]] = []
    granted: list[int] = []
    holding: list[Connection] = []

    async def request(n: int) -> tuple[Connection, bool]:
        got = await pool.acquire()
        granted.append(n)
        holding.append(got[0])
        return got

    for op in schedule:
        if op[0] == "arrive":
            arrived.append(asyncio.create_task(request(len(arrived))))
        elif op[0] == "done" and holding:
            conn = holding.pop(0)
            pool.release(conn if op[1] else broken(conn))
        elif op[0] == "cancel":
            waiting = [t for t in arrived if not t.done()]
            if waiting:
                waiting[int(str(op[1])) % len(waiting)].cancel()
        await settle()
        assert pool._open <= size
        assert not (pool.waiting and pool._idle)
        if pool.waiting:
            assert pool._open == size
    assert granted == sorted(granted), "a later request was served before an earlier one"
    for task in arrived:
        task.cancel()
    await settle()


@given(st.integers(1, 3), ops)
@settings(max_examples=150, deadline=None)
def test_any_schedule_serves_requests_in_arrival_order(
    size: int, schedule: list[tuple[object, ...]]
) -> None:
    """For any interleaving of arrivals, releases (reusable or broken) and cancellations, the
    pool never exceeds its size, never holds idle connections while someone waits, never lets
    anyone wait while a slot is free, and serves requests in the order they arrived."""
    asyncio.run(run_schedule(size, schedule))

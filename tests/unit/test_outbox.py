"""Held writes (gateway.proxy.outbox): sent at the end of the loop's pass, never out of order,
never lost to a close. Driven with a recording transport on a real event loop."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from gateway.proxy.forward import Forwarder
from gateway.proxy.front import FrontProtocol
from gateway.proxy.front_context import FrontContext
from gateway.proxy.front_exchange import Exchanger
from gateway.proxy.outbox import outbox
from gateway.services import Services


class Recorder:
    """A transport that records what is done to it, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.events.append(("write", data))

    def close(self) -> None:
        self.closing = True
        self.events.append(("close", b""))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def front() -> tuple[FrontProtocol, Recorder]:
    # The write path uses only the context's connection bookkeeping, not services; the
    # forwarder (no upstream in use) says whether the peer is a trusted proxy.
    ctx = FrontContext(cast(Services, None), Forwarder(), ("127.0.0.1", 0), frozenset(), ())
    proto = FrontProtocol(ctx)
    transport = Recorder()
    proto.connection_made(cast(asyncio.Transport, transport))
    return proto, transport


def ex(proto: FrontProtocol) -> Exchanger:
    """The connection's answering side, where writes are held."""
    assert proto._out is not None
    return proto._out


async def next_pass() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_held_writes_go_out_together_at_the_end_of_the_pass() -> None:
    one, t1 = front()
    two, t2 = front()
    ex(one)._hold(b"a1")
    ex(two)._hold(b"b1")
    ex(one)._hold(b"a2")  # a pipelined second answer joins the first: one write
    assert t1.events == t2.events == []
    await next_pass()
    assert t1.events == [("write", b"a1a2")]
    assert t2.events == [("write", b"b1")]


async def test_a_direct_write_sends_what_is_held_first() -> None:
    proto, transport = front()
    ex(proto)._hold(b"first")
    ex(proto)._send(b"second")
    await next_pass()
    assert transport.events == [("write", b"first"), ("write", b"second")]


async def test_eof_does_not_close_the_connection_under_a_held_answer() -> None:
    """Returning False from eof_received closes the transport: the held answer goes first."""
    proto, transport = front()
    ex(proto)._hold(b"answer")
    assert proto.eof_received() is False
    assert transport.events[0] == ("write", b"answer")


async def test_closing_sends_what_is_held_first() -> None:
    proto, transport = front()
    ex(proto)._hold(b"answer")
    proto._close()
    await next_pass()
    assert transport.events == [("write", b"answer"), ("close", b"")]


async def test_nothing_is_written_to_a_lost_connection() -> None:
    proto, transport = front()
    ex(proto)._hold(b"answer")
    proto.connection_lost(ConnectionResetError())
    await next_pass()
    assert transport.events == []


async def test_one_outbox_per_loop() -> None:
    loop = asyncio.get_running_loop()
    assert outbox(loop) is outbox(loop)
    other = asyncio.new_event_loop()
    try:
        assert outbox(other) is not outbox(loop)
    finally:
        other.close()

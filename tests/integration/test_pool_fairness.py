"""The upstream pool under more requests than connections, on both servers: requests are
served in the order they queued (a freed connection goes to the oldest waiter, the fast path
never overtakes the queue), so keep-alive clients advance in lockstep and none gets a 504."""

from __future__ import annotations

import asyncio
import collections

import aiohttp
from aiohttp import web

from tests.integration.gateways import MakeGateway
from tests.integration.upstream import EchoUpstream

CLIENTS = 40  # concurrent keep-alive clients, over the two connections of `few`
ROUNDS = 15  # requests each client sends, one after the other


async def test_waiting_requests_are_served_in_arrival_order(make_gateway: MakeGateway) -> None:
    """Once every client has queued, no client gets a second answer before every other got
    its first, and so on: the served counts never drift more than a request or two apart."""
    gate = asyncio.Event()

    async def answer(request: web.Request) -> web.Response:
        await gate.wait()  # the first requests hold both connections until all have queued
        return web.Response(text="ok")

    upstream = EchoUpstream()
    upstream.route("GET", "/few/{client}/{round}", answer)
    gw = await make_gateway(upstream=upstream)
    statuses: collections.Counter[int] = collections.Counter()

    async def client(n: int) -> None:
        async with aiohttp.ClientSession() as session:  # a connection of its own, kept alive
            for r in range(ROUNDS):
                url = f"http://127.0.0.1:{gw.port}/few/{n}/{r}"
                async with session.get(url, headers=gw.auth) as response:
                    await response.read()
                    statuses[response.status] += 1

    async with asyncio.timeout(60):
        tasks = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
        await asyncio.sleep(2.0)  # every client's first request is in the gateway's queue
        gate.set()
        await asyncio.gather(*tasks)

    assert statuses == {200: CLIENTS * ROUNDS}
    served = [r.target.split("/")[2] for r in gw.upstream.received if r.target.startswith("/few/")]
    assert len(served) == CLIENTS * ROUNDS
    first = sorted(served[:CLIENTS], key=int)
    assert first == [str(c) for c in range(CLIENTS)], "a second request overtook a first one"
    counts: collections.Counter[str] = collections.Counter()
    widest = 0
    for n in served[CLIENTS:]:  # after the first round, queued all at once
        counts[n] += 1
        widest = max(
            widest, max(counts.values()) - min(counts.get(str(c), 0) for c in range(CLIENTS))
        )
    assert widest <= 3, f"a client got {widest} answers ahead of another: requests overtook"

"""`make_gateway`: every test that uses it runs against both of the gateway's HTTP servers.

A test (or a module, through `pytestmark`) that cannot run against one of them says so with
`@pytest.mark.server("aiohttp" | "front", reason="...")`; without a reason the run stops, so a
server is never left out in silence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.gateways import (
    SERVERS,
    AiohttpClient,
    MakeGateway,
    aiohttp_gateways,
    front_gateways,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "server(name, reason): run a make_gateway test against one server only "
        "(aiohttp or front), for the reason given",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "make_gateway" not in metafunc.fixturenames:
        return
    servers = SERVERS
    marker = metafunc.definition.get_closest_marker("server")
    if marker is not None:
        if len(marker.args) != 1 or marker.args[0] not in SERVERS:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: server() takes one of {SERVERS}"
            )
        if not marker.kwargs.get("reason"):
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: server() needs a reason=")
        servers = (marker.args[0],)
    metafunc.parametrize("make_gateway", servers, indirect=True)


@pytest.fixture
async def make_gateway(
    request: pytest.FixtureRequest,
    aiohttp_client: AiohttpClient,
    sqlite_url: str,
    tmp_path: Path,
) -> AsyncIterator[MakeGateway]:
    """Start the gateway on the server of this run (aiohttp in this process, or the fast front
    as a `gateway serve` process) in front of `upstream` (an EchoUpstream), optionally `raw` (a
    RawUpstream, also behind the one-connection `tiny` upstream) and `unaccepting` (a port)."""
    if request.param == "aiohttp":
        async with aiohttp_gateways(aiohttp_client, sqlite_url, tmp_path) as make:
            yield make
    else:
        async with front_gateways(tmp_path) as make:
            yield make

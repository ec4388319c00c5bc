"""Nothing a client sends in its headers reaches the logs, even when aiohttp rejects it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.app import create_app
from gateway.keys import format as keyformat
from tests.conftest import make_settings


@pytest.mark.parametrize("size", [20_000, 100_000])
async def test_oversized_header_with_a_key_is_refused_without_logging_the_key(
    aiohttp_client: Any, sqlite_url: str, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    """A key padded past the header size limit gets a 4xx and never appears in any log record."""
    client = await aiohttp_client(create_app(make_settings(sqlite_url)))
    key = keyformat.generate().text
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    padding = "x" * size
    writer.write(
        f"GET /api/reports/x HTTP/1.1\r\nHost: t\r\nX-API-KEY: {key}{padding}\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1].startswith(b"4"), status_line
    await asyncio.sleep(0.1)
    for record in caplog.records:
        text = record.getMessage() + (str(record.exc_info) if record.exc_info else "")
        assert key not in text
        assert key[:20] not in text

"""Tracing (setting `tracing`): a SERVER span per request, data plane and management alike,
whose parent is the client's `traceparent`; the span's own `traceparent` goes upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway import tracing
from tests.integration.gateways import MakeGateway, front_gateways

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into an in-memory exporter, for this test only."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def only(found: list[ReadableSpan], route: str) -> ReadableSpan:
    matching = [s for s in found if s.attributes and s.attributes.get("http.route") == route]
    assert len(matching) == 1, [s.name for s in found]
    return matching[0]


@pytest.mark.server("aiohttp", reason="the in-memory exporter needs the gateway in this process")
async def test_spans_join_the_clients_trace_and_go_upstream(
    make_gateway: MakeGateway, spans: InMemorySpanExporter
) -> None:
    """A proxied request is a SERVER span in the client's trace, labelled with its route
    template and status; the upstream gets a traceparent naming that span; the gateway's own
    endpoints get spans too; a client's trace context never reaches the upstream as sent."""
    gw = await make_gateway()
    async with gw.client.get("/api/x/42", headers={**gw.auth, "traceparent": TRACEPARENT}) as r:
        assert r.status == 200
        rid = r.headers["X-Request-Id"]
    async with gw.client.get("/healthz") as r:
        assert r.status == 200
    async with gw.client.get("/api/x") as r:
        assert r.status == 401
    found = list(spans.get_finished_spans())
    proxied = [s for s in found if s.attributes and s.attributes.get("http.route") == "/api/**"]
    assert len(proxied) == 2
    allowed = next(s for s in proxied if s.attributes["http.response.status_code"] == 200)
    assert allowed.kind is SpanKind.SERVER
    assert allowed.name == "GET /api/**"
    assert allowed.attributes["keygate.outcome"] == "allowed"
    assert allowed.attributes["keygate.request_id"] == rid
    assert f"{allowed.context.trace_id:032x}" == TRACE
    assert allowed.parent is not None
    assert f"{allowed.parent.span_id:016x}" == PARENT
    sent = gw.upstream.received[-1].header("traceparent")
    assert sent == [f"00-{TRACE}-{allowed.context.span_id:016x}-01"]
    refused = next(s for s in proxied if s.attributes["http.response.status_code"] == 401)
    assert refused.attributes["keygate.outcome"] == "credential-missing"
    assert refused.parent is None  # no traceparent sent: a trace of its own
    assert only(found, "/healthz").attributes["http.response.status_code"] == 200


async def test_tracing_off_passes_the_clients_traceparent_through(
    make_gateway: MakeGateway,
) -> None:
    """Off (the default), the gateway adds no trace context and forwards the client's as is."""
    assert not tracing.ENABLED
    gw = await make_gateway()
    async with gw.client.get("/api/x", headers={**gw.auth, "traceparent": TRACEPARENT}) as r:
        assert r.status == 200
    assert gw.upstream.received[-1].header("traceparent") == [TRACEPARENT]


def console_spans(text: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporter printed, one after another."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (start := text.find("{", at)) != -1:
        obj, at = decoder.raw_decode(text, start)
        found.append(obj)
    return found


async def test_the_fast_front_traces_and_sends_traceparent_upstream(tmp_path: Path) -> None:
    """`tracing: console` on the fast front: the proxied request is a SERVER span in the
    client's trace, printed when the worker stops, and the upstream got its traceparent."""
    out = tmp_path / "stdout.txt"
    async with front_gateways(tmp_path) as make:
        gw = await make(out_to=out, tracing="console")
        headers = {**gw.auth, "traceparent": TRACEPARENT}
        async with gw.client.get("/api/x", headers=headers) as r:
            assert r.status == 200
        sent = gw.upstream.received[-1].header("traceparent")
        assert gw.process is not None
        gw.process.terminate()
        async with asyncio.timeout(15):
            await gw.process.wait()
    spans = [s for s in console_spans(out.read_text()) if "context" in s]
    proxied = [s for s in spans if s["attributes"].get("http.route") == "/api/**"]
    assert len(proxied) == 1, spans
    span = proxied[0]
    assert span["kind"] == "SpanKind.SERVER"
    assert span["context"]["trace_id"] == "0x" + TRACE
    assert span["parent_id"] == "0x" + PARENT
    assert sent == [f"00-{TRACE}-{span['context']['span_id'][2:]}-01"]
    assert span["attributes"]["keygate.outcome"] == "allowed"

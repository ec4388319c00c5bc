"""OpenTelemetry spans, off by default (setting `tracing`: off, console, otlp).

The OpenTelemetry packages are an optional extra (`pip install keygate[otel]`) and are imported
only when tracing is on. Each request the gateway answers is one SERVER span (data plane and
management alike) whose parent is the client's `traceparent`, if any; a forwarded request
carries the span's own `traceparent` upstream, so the upstream's spans join the trace.

Off, `ENABLED` is false and the fast front does no tracing work at all beyond reading it; the
aiohttp server's spans are a shared no-op object.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from gateway.settings import Settings, SettingsError

ENABLED = False
_tracer: Any = None
_propagator: Any = None
_provider: Any = None

TRACE_HEADERS = ("traceparent", "tracestate")


class TracingError(SettingsError):
    """Tracing was asked for but cannot run (the extra is not installed)."""


def setup(settings: Settings) -> None:
    """Start tracing as configured (once per worker process)."""
    if settings.tracing == "off" or ENABLED:
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        raise TracingError(
            "tracing: needs the OpenTelemetry packages (pip install 'keygate[otel]')"
        ) from None
    exporter: SpanExporter
    if settings.tracing == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TracingError(
                "tracing: otlp needs opentelemetry-exporter-otlp-proto-http "
                "(pip install 'keygate[otel]')"
            ) from None
        exporter = OTLPSpanExporter(endpoint=settings.tracing_endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": "keygate"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    use_provider(provider)


def use_provider(provider: Any) -> None:
    """Trace into `provider` (an SDK TracerProvider; tests pass one with an in-memory
    exporter)."""
    global ENABLED, _tracer, _propagator, _provider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _provider = provider
    _tracer = provider.get_tracer("keygate")
    _propagator = TraceContextTextMapPropagator()
    ENABLED = True


def shutdown() -> None:
    """Flush and stop (at the worker's exit)."""
    global ENABLED, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    ENABLED, _tracer, _provider = False, None, None


class Span:
    """One request's span: started from the client's trace context, ended with its route
    and status. `traceparent()` is the header to send upstream."""

    __slots__ = ("_ended", "_span")

    def __init__(self, method: str, carrier: Mapping[str, str], request_id: str) -> None:
        from opentelemetry.trace import SpanKind

        self._ended = False
        parent = _propagator.extract(carrier)
        self._span = _tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "keygate.request_id": request_id},
        )

    def headers(self) -> list[tuple[str, str]]:
        """`traceparent` (and `tracestate`) naming this span, for the upstream request."""
        from opentelemetry.trace import set_span_in_context

        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=set_span_in_context(self._span))
        return list(carrier.items())

    def finish(self, route: str, status: int, outcome: str | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        span = self._span
        span.update_name(f"{span.name} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if outcome is not None:
            span.set_attribute("keygate.outcome", outcome)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def abandon(self) -> None:
        if not self._ended:
            self._ended = True
            self._span.end()


class _NoSpan:
    __slots__ = ()

    def headers(self) -> list[tuple[str, str]]:
        return []

    def finish(self, route: str, status: int, outcome: str | None = None) -> None:
        return None

    def abandon(self) -> None:
        return None


NO_SPAN = _NoSpan()


def start(method: str, values: Any, request_id: str) -> Span:
    """A span for a fast-front request (`values(name)`: the header's values); call only when
    ENABLED."""
    carrier = {name: found[0] for name in TRACE_HEADERS if (found := values(name))}
    return Span(method, carrier, request_id)


@contextlib.contextmanager
def server_span(
    method: str, headers: Mapping[str, str], request_id: str
) -> Iterator[Span | _NoSpan]:
    """A span around one aiohttp request; ended at `finish`, or as abandoned on an error."""
    if not ENABLED:
        yield NO_SPAN
        return
    span = Span(method, _carrier(headers), request_id)
    try:
        yield span
    finally:
        span.abandon()  # ends a span an error left unfinished; a no-op after `finish`


def _carrier(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in TRACE_HEADERS if name in headers}

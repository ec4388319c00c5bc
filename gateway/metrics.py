"""Prometheus metrics. Label values come from small fixed sets (never paths or key ids)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)


class OutcomeCounter(Collector):
    """A counter by one label, counted in a plain dict and rendered at scrape time.

    The data plane counts every request. prometheus_client's labelled `Counter` takes a lock
    and looks the child up on each `labels(...).inc()` (about 3 µs here, a noticeable share
    of a proxied request); an event loop needs neither. Increments from other threads would
    need the lock, so this is for code running on the event loop only.
    """

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self.counts: dict[str, int] = {}

    def inc(self, value: str) -> None:
        counts = self.counts
        counts[value] = counts.get(value, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in sorted(self.counts.items()):
            family.add_metric([value], count)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, labels=[self._label])


PROXY_REQUESTS = OutcomeCounter(
    "keygate_proxy_requests",
    "Requests on the data plane by outcome (allowed, or the denial reason).",
    "outcome",
)
REGISTRY.register(PROXY_REQUESTS)
CONNECTIONS_CLOSED = OutcomeCounter(
    "keygate_connections_closed",
    "Client connections the gateway closed on its own, by reason (a deadline, the cap).",
    "reason",
)
REGISTRY.register(CONNECTIONS_CLOSED)


class PairCounter(Collector):
    """A counter by two labels, counted like `OutcomeCounter` (event loop only)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self.counts: dict[tuple[str, str], int] = {}

    def inc(self, first: str, second: str) -> None:
        counts = self.counts
        pair = (first, second)
        counts[pair] = counts.get(pair, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for pair, count in sorted(self.counts.items()):
            family.add_metric(list(pair), count)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labels)


# Limit names come from the policy file (a small set the operator chose), never from clients.
RATE_LIMITS = PairCounter(
    "keygate_rate_limit_decisions",
    "Rate-limit decisions by limit name and outcome: allowed (spent), limited (this limit "
    "refused), allowed-not-spent (passed, but another limit of the request refused).",
    ("limit", "outcome"),
)
REGISTRY.register(RATE_LIMITS)
KEY_CACHE_ENTRIES = Gauge(
    "keygate_key_cache_entries", "Entries in the in-process key cache.", registry=REGISTRY
)
KEY_DB_LOOKUPS = Gauge(
    "keygate_key_db_lookups", "Database lookups made by the key verifier.", registry=REGISTRY
)
KEY_BUDGET_ADDRESSES = Gauge(
    "keygate_key_budget_addresses",
    "Client addresses with failed keys counted in an open window (the failed-key budget).",
    registry=REGISTRY,
)
OPEN_CONNECTIONS = Gauge(
    "keygate_open_connections",
    "Client connections open on this worker's public listener.",
    registry=REGISTRY,
)


def connection_refused() -> None:
    """Count one connection refused over `max_connections` (either server)."""
    CONNECTIONS_CLOSED.inc("max-connections")


def watch_open_connections(count: Callable[[], int]) -> None:
    """Read the open-connection gauge from `count()` at scrape time: nothing per connection."""
    OPEN_CONNECTIONS.set_function(count)

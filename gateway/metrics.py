"""Prometheus metrics. Label values come from small fixed sets (never paths or key ids)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

PROXY_REQUESTS = Counter(
    "keygate_proxy_requests_total",
    "Requests on the data plane by outcome (allowed, or the denial reason).",
    ["outcome"],
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "keygate_upstream_seconds",
    "Time to the upstream's response headers.",
    ["upstream"],
    registry=REGISTRY,
)
KEY_CACHE_ENTRIES = Gauge(
    "keygate_key_cache_entries", "Entries in the in-process key cache.", registry=REGISTRY
)
KEY_DB_LOOKUPS = Gauge(
    "keygate_key_db_lookups", "Database lookups made by the key verifier.", registry=REGISTRY
)

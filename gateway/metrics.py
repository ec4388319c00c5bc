"""Prometheus metrics, true across worker processes.

With several workers the master gives prometheus_client a fresh private folder before it
starts them (`prepare_workers`): each worker then keeps its values in memory-mapped files
there, and a scrape answered by any worker reads and sums them all (`exposition`), so every
scrape sees the whole instance. A dead worker's gauges are dropped (`worker_exited`); its
counters stay in the sum, so counters never go down when a worker is replaced. One worker
keeps its values in memory, with the same series.

Label values come from small fixed sets: policy route templates (never raw paths), methods
from a fixed list, status classes, outcome codes, upstream names, cache layers. Never a key,
key id, user id or address.

The data plane records each request once, when it is answered (`request_done`), into plain
counts bound to their labelled children on first use (`Tally`, `Timings`): no `labels(...)`
lookup, lock or file write per request. They are handed to prometheus_client at every scrape
and every SAMPLE_SECONDS, so with several workers another worker's requests show up in a
scrape within about a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

REGISTRY = CollectorRegistry(auto_describe=True)
# prometheus_client picks its value store when imported: files when this variable names a
# folder (set by the master for its workers), memory otherwise.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = values.ValueClass is not values.MutexValue

UNMATCHED = "(unmatched)"  # the route label of a request no policy route matched
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
STATUS_CLASSES: Final = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")  # 0xx: no answer was written

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_AUTH = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5)

REQUESTS: Final = Counter(
    "keygate_requests",
    "Requests answered, by route template, method, status class and outcome code.",
    ["route", "method", "status", "outcome"],
    registry=REGISTRY,
)
REQUEST_SECONDS: Final = Histogram(
    "keygate_request_duration_seconds",
    "Time from a request's head to its answer's end, by route template.",
    ["route"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
UPSTREAM_SECONDS: Final = Histogram(
    "keygate_upstream_duration_seconds",
    "Time from sending a request upstream to its response head, by upstream.",
    ["upstream"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
AUTH_SECONDS = Histogram(
    "keygate_auth_duration_seconds",
    "Time to decide a data-plane request (memory: from the in-process cache; lookup: it "
    "needed Redis, the database or a password check).",
    ["path"],
    buckets=_AUTH,
    registry=REGISTRY,
)
KEY_CACHE = Counter(
    "keygate_key_cache",
    "Key verifications by cache layer (local, redis, database) and result.",
    ["layer", "result"],
    registry=REGISTRY,
)
BACKEND_ERRORS = Counter(
    "keygate_backend_errors",
    "Failed or timed-out calls to the database and to Redis.",
    ["backend"],
    registry=REGISTRY,
)
CONNECTIONS_CLOSED: Final = Counter(
    "keygate_connections_closed",
    "Client connections the gateway closed on its own, by reason (max-connections: refused "
    "over the cap; a deadline).",
    ["reason"],
    registry=REGISTRY,
)
OPEN_CONNECTIONS: Final = Gauge(
    "keygate_open_connections",
    "Client connections open on the public listener (all live workers).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
UPSTREAM_CONNECTIONS = Gauge(
    "keygate_upstream_connections",
    "Pooled upstream connections by upstream and state (busy, idle), all live workers.",
    ["upstream", "state"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
# Limit names come from the policy file (a small set the operator chose), never from clients.
RATE_LIMIT_DECISIONS: Final = Counter(
    "keygate_rate_limit_decisions",
    "Rate-limit decisions by limit name and outcome: allowed (spent), limited (this limit "
    "refused), allowed-not-spent (passed, but another limit of the request refused).",
    ["limit", "outcome"],
    registry=REGISTRY,
)
KEY_CACHE_ENTRIES = Gauge(
    "keygate_key_cache_entries",
    "Entries in the in-process key caches (all live workers).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
KEY_BUDGET_ADDRESSES = Gauge(
    "keygate_key_budget_addresses",
    "Client addresses with failed keys counted in an open window (the failed-key budget).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
INVALIDATIONS: Final = Counter(
    "keygate_invalidations",
    "Key invalidations received, by channel (pubsub: Redis; log: the database's log).",
    ["source"],
    registry=REGISTRY,
)
INVALIDATION_DELAY: Final = Histogram(
    "keygate_invalidation_delay_seconds",
    "Time from a change's commit to its invalidation being applied here (database log).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
POLICY_RELOADS: Final = Counter(
    "keygate_policy_reloads",
    "Policy reloads by result (ok, failed).",
    ["result"],
    registry=REGISTRY,
)
POLICY_LOADED: Final = Gauge(
    "keygate_policy_loaded_timestamp_seconds",
    "Unix time the active policy was loaded (the latest of the live workers).",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
POLICY_INFO: Final = Gauge(
    "keygate_policy_info",
    "1 for the hash of the active policy, 0 for one replaced by a reload.",
    ["hash"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
WORKER_RESTARTS: Final = Gauge(
    "keygate_worker_restarts_total",
    "Workers the master started again after they died, since the master started.",
    registry=REGISTRY,
    # The master counts; each worker it starts is told the count so far, and the highest
    # any worker (alive or gone) was told is the total.
    multiprocess_mode="max",
)

# -- the data plane's per-request record ----------------------------------------------------


class Tally:
    """Counter increments held in a plain int and added to the Prometheus child at `flush`.

    prometheus_client's `inc` takes a lock and, with several workers, writes a memory-mapped
    file: a few microseconds, several times per request, on the data plane's hot path. The
    event loop needs no lock, so requests only add here; `flush` (every SAMPLE_SECONDS and at
    each scrape, see `sample`) hands the sums over. Event-loop code only.
    """

    __slots__ = ("_child", "pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.pending = 0

    def inc(self) -> None:
        self.pending += 1

    def flush(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, 0
            self._child.inc(pending)


class Timings:
    """Histogram observations held in plain counts per bucket, as `Tally` holds increments.

    `flush` adds them to the child's own bucket and sum values (prometheus_client's
    `Histogram` keeps one value per bucket, not cumulated, in `_buckets`, and the sum in
    `_sum`; tests/unit/test_observability.py checks the result against `observe`).
    """

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        self._counts = [0] * len(counts)
        total, self._sum = self._sum, 0.0
        buckets = self._child._buckets
        for i, count in enumerate(counts):
            if count:
                buckets[i].inc(count)
        self._child._sum.inc(total)


_pending: Final[list[Tally | Timings]] = []


def _tally(child: Any) -> Tally:
    held = Tally(child)
    _pending.append(held)
    return held


def _timings(child: Any) -> Timings:
    held = Timings(child)
    _pending.append(held)
    return held


def flush() -> None:
    """Hand what requests counted over to prometheus_client (see `Tally`)."""
    for held in _pending:
        held.flush()


class _PairTally:
    """Rate-limit decisions, counted like requests (a plain tally per label pair)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], Tally] = {}

    def inc(self, limit: str, outcome: str) -> None:
        tally = self._held.get((limit, outcome))
        if tally is None:
            tally = self._held[(limit, outcome)] = _tally(
                RATE_LIMIT_DECISIONS.labels(limit, outcome)
            )
        tally.pending += 1


RATE_LIMITS = _PairTally()
_requests: Final[dict[tuple[str, str, int, str], Tally]] = {}
_durations: Final[dict[str, Timings]] = {}
_upstreams: Final[dict[str, Timings]] = {}
_AUTH_MEMORY: Final = _timings(AUTH_SECONDS.labels("memory"))
_AUTH_LOOKUP: Final = _timings(AUTH_SECONDS.labels("lookup"))


def request_done(route: str, method: str, status: int, outcome: str, seconds: float) -> None:
    """Count one answered request and its duration. `route` is a policy route template (or
    UNMATCHED, or a gateway page's template) and `outcome` a code from a fixed set."""
    if method not in METHODS:
        method = "OTHER"
    key = (route, method, status, outcome)
    tally = _requests.get(key)
    if tally is None:
        status_class = STATUS_CLASSES[status // 100 if 0 <= status < 600 else 0]
        tally = _requests[key] = _tally(REQUESTS.labels(route, method, status_class, outcome))
    tally.pending += 1
    timings = _durations.get(route)
    if timings is None:
        timings = _durations[route] = _timings(REQUEST_SECONDS.labels(route))
    # `timings.observe(seconds)`, inline here and below: three per request.
    timings._counts[bisect_left(timings._bounds, seconds)] += 1
    timings._sum += seconds


def upstream_answered(upstream: str, seconds: float) -> None:
    timings = _upstreams.get(upstream)
    if timings is None:
        timings = _upstreams[upstream] = _timings(UPSTREAM_SECONDS.labels(upstream))
    timings._counts[bisect_left(timings._bounds, seconds)] += 1
    timings._sum += seconds


def auth_decided(seconds: float, *, lookup: bool) -> None:
    timings = _AUTH_LOOKUP if lookup else _AUTH_MEMORY
    timings._counts[bisect_left(timings._bounds, seconds)] += 1
    timings._sum += seconds


_KEY_CACHE: Final = {
    (layer, result): KEY_CACHE.labels(layer, result)
    for layer, results in (
        ("local", ("hit", "negative", "miss")),
        ("redis", ("hit", "negative", "miss")),
        ("database", ("found", "unknown", "error")),
    )
    for result in results
}
LOCAL_HIT = _tally(_KEY_CACHE["local", "hit"])  # once per request with a cached key


def key_cache(layer: str, result: str) -> None:
    _KEY_CACHE[layer, result].inc()


_DATABASE_ERRORS: Final = BACKEND_ERRORS.labels("database")
_REDIS_ERRORS: Final = BACKEND_ERRORS.labels("redis")


def database_error() -> None:
    _DATABASE_ERRORS.inc()


def redis_error() -> None:
    _REDIS_ERRORS.inc()


def connection_closed(reason: str) -> None:
    """Count one connection closed by the gateway: a deadline (`header-timeout`,
    `body-timeout`, `idle-timeout`) or `max-connections`."""
    CONNECTIONS_CLOSED.labels(reason).inc()


def connection_refused() -> None:
    """Count one connection refused over `max_connections` (either server)."""
    connection_closed("max-connections")


def invalidation_received(source: str, delay: float | None = None) -> None:
    INVALIDATIONS.labels(source).inc()
    if delay is not None:
        INVALIDATION_DELAY.observe(max(0.0, delay))


# -- policy reloads (called by the reload machinery) ----------------------------------------

_active_policy: Final[list[str]] = []


def policy_loaded(digest: str, at: float) -> None:
    """The policy with hash `digest` became active at unix time `at`."""
    for old in _active_policy:
        if old != digest:
            POLICY_INFO.labels(old).set(0)
    _active_policy[:] = [digest]
    POLICY_INFO.labels(digest).set(1)
    POLICY_LOADED.set(at)


def policy_reload(result: str) -> None:
    """Count one reload attempt: `ok` or `failed`."""
    POLICY_RELOADS.labels(result).inc()


def worker_restarts(count: int) -> None:
    """The master's count of worker restarts, as told to this worker when it started."""
    WORKER_RESTARTS.set(count)


# -- gauges sampled from their owners -------------------------------------------------------

_samplers: Final[list[Callable[[], None]]] = []


def sampled(sample: Callable[[], None]) -> Callable[[], None]:
    """Register `sample()`, which sets gauges from live state; run at every scrape of this
    worker and every SAMPLE_SECONDS (so other workers' scrapes see it). Returns a function
    that unregisters it."""
    _samplers.append(sample)
    return lambda: _samplers.remove(sample) if sample in _samplers else None


SAMPLE_SECONDS = 1.0


_open_count: Final[list[Callable[[], int]]] = []


def sample() -> None:
    flush()
    if _open_count:
        OPEN_CONNECTIONS.set(_open_count[0]())
    for each in list(_samplers):
        each()


def watch_open_connections(count: Callable[[], int]) -> None:
    """Sample the open-connection gauge from `count()` (the server started last in this
    process): nothing per connection."""
    _open_count[:] = [count]


def exposition() -> tuple[bytes, str]:
    """The text a scrape returns (every live worker's values summed), and its content type."""
    sample()
    if not MULTIPROCESS:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- the master's part ----------------------------------------------------------------------


_workers_folder: Final[list[str]] = []  # the master's: the folder its workers write into


def prepare_workers(workers: int) -> Callable[[], None]:
    """Before worker processes start: with more than one, a fresh private folder for their
    metric files, named to them through the environment (which prometheus_client reads when a
    spawned worker imports it). Returns the clean-up to run when the last worker has ended."""
    if workers <= 1:
        return lambda: None
    folder = tempfile.mkdtemp(prefix="keygate-metrics-")  # 0700: ours alone
    os.environ[MULTIPROC_ENV] = folder
    _workers_folder[:] = [folder]

    def cleanup() -> None:
        os.environ.pop(MULTIPROC_ENV, None)
        _workers_folder.clear()
        shutil.rmtree(folder, ignore_errors=True)

    return cleanup


def worker_exited(pid: int | None) -> None:
    """Drop a dead worker's live gauges (its counters stay in the sums)."""
    if pid is not None and _workers_folder:
        multiprocess.mark_process_dead(pid, _workers_folder[0])  # type: ignore[no-untyped-call]

"""Pure parts of observability: request ids, the rate-limited security log, the JSON log
format, route-shadowing, and the labels the metrics accept."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway import metrics
from gateway.access import MAX_ID_LENGTH, RequestIds, valid_id
from gateway.events import RateLimitedLog
from gateway.logs import JsonFormatter
from gateway.policy.model import Route
from gateway.shadowing import matches, shadowed

SAFE = st.text(alphabet=st.sampled_from("abcXYZ019._:@+=/-"), min_size=1, max_size=MAX_ID_LENGTH)


@given(SAFE)
def test_a_trusted_well_formed_id_is_kept(sent: str) -> None:
    """1-128 safe characters from a trusted proxy are the request's id, as sent."""
    assert RequestIds().take([sent], True) == sent


@given(st.text(max_size=300))
def test_any_other_id_is_replaced_by_a_safe_one(sent: str) -> None:
    """Whatever a client sends, the id used is well-formed: the sent one only when it is."""
    ids = RequestIds()
    taken = ids.take([sent], True)
    assert valid_id(taken)
    assert (taken == sent) is valid_id(sent)
    assert "\r" not in taken
    assert "\n" not in taken
    assert ids.take([sent], False) != sent or not valid_id(sent)


def test_ids_are_unique_and_untrusted_or_repeated_ids_are_not_taken() -> None:
    """New ids never repeat; an untrusted peer's id and two ids in one request are ignored."""
    ids = RequestIds()
    assert len({ids.new() for _ in range(10_000)}) == 10_000
    assert ids.take(["abc"], False) != "abc"
    assert ids.take(["abc", "def"], True) not in ("abc", "def")
    assert not valid_id("a\r\nX-Injected: 1")
    assert not valid_id("x" * 10_240)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_writes_at_most_n_lines_a_second_then_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood of 1,000 events in one second writes 5 lines; the next second starts with one
    line counting the 995 left out."""
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.flood"), 5, clock=clock)
    caplog.set_level(logging.WARNING, logger="test.flood")
    written = sum(limited.warning("event %d", i, event="x") for i in range(1000))
    assert written == 5
    assert len(caplog.records) == 5
    clock.now += 1.0
    assert limited.warning("after", event="x")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[5] == "suppressed 995 similar line(s) in the last second(s)"
    assert messages[6] == "after"
    assert caplog.records[0].event == {"event": "x"}  # type: ignore[attr-defined]


def test_json_formatter_writes_one_object_with_fields() -> None:
    """A record is one JSON line with time, level, logger, message, worker and its fields;
    an exception becomes its type and traceback, on the same line."""
    record = logging.LogRecord(
        "gateway.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    record.access = {"status": 200, "route": "/api/**"}
    line = JsonFormatter(worker=1).format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "hello you"
    assert (data["level"], data["logger"], data["worker"]) == ("WARNING", "gateway.x", 1)
    assert (data["status"], data["route"]) == (200, "/api/**")
    assert data["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("g", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    data = json.loads(JsonFormatter().format(failed))
    assert data["error"] == "ValueError"
    assert "boom" in data["traceback"]


def route(path: str) -> Route:
    return Route(path, ("GET",), "up", None, auth_none=True, source=f"p.yaml: {path}")


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/docs", "/docs", True),
        ("/docs/**", "/docs", True),
        ("/**", "/metrics", True),
        ("/v1/{x}/**", "/v1/admin/users", True),
        ("/v1/{x}", "/v1/admin/users", False),
        ("/api/**", "/apix", False),
        ("/login", "/logout", False),
        ("/", "/", True),
    ],
)
def test_route_templates_match_paths(template: str, path: str, expected: bool) -> None:
    """`{param}` takes one segment, a final `**` any rest, literals must be equal."""
    assert matches(template, path) is expected


def test_shadowed_names_each_route_once() -> None:
    """One warning per shadowed route, naming its source and the own paths."""
    found = shadowed([route("/docs"), route("/shop/**")], ["/docs", "/metrics"])
    assert found == [
        "warning: route /docs (p.yaml: /docs) is shadowed by the gateway's own /docs: those "
        "requests never reach the upstream"
    ]


def test_metrics_labels_stay_bounded() -> None:
    """Unknown methods share one label; any status falls into its class; children are
    bound once per label set."""
    before = len(metrics._requests)
    for method in ("BREW", "PROPFIND", "X" * 50):
        metrics.request_done("/t/**", method, 200, "allowed", 0.001)
    metrics.request_done("/t/**", "GET", 999, "allowed", 0.001)
    metrics.request_done("/t/**", "GET", 0, "allowed", 0.001)
    text = metrics.exposition()[0].decode()
    assert 'method="OTHER"' in text
    assert "BREW" not in text
    assert 'route="/t/**",status="0xx"' in text
    assert len(metrics._requests) - before <= 4


def test_held_timings_flush_to_what_observe_would_give() -> None:
    """Observations held by `Timings` and flushed render exactly as the same observations
    made with prometheus_client's own `observe`, bucket by bucket; a `Tally` adds up."""
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=(0.001, 0.01, 0.1, 1), registry=registry)
    held_metric = Histogram("held_seconds", "h", buckets=(0.001, 0.01, 0.1, 1), registry=registry)
    count = Counter("held_things", "c", registry=registry)
    held, tally = metrics.Timings(held_metric), metrics.Tally(count)
    values = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 100.0]
    for value in values:
        direct.observe(value)
        held.observe(value)
        tally.inc()
    held.flush()
    tally.flush()
    held.flush()  # nothing more: a second flush adds nothing
    text = generate_latest(registry).decode()

    def series(name: str) -> list[str]:
        return [
            line.split(name, 1)[1]
            for line in text.splitlines()
            if line.startswith(name + "_") and "_created" not in line
        ]

    assert series("direct_seconds") == series("held_seconds")
    assert "held_things_total 10.0" in text


def test_prepare_workers_makes_a_private_folder_and_removes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One worker needs no folder; several get a fresh 0700 folder named in the environment
    for the spawned workers, removed (and unnamed) by the clean-up."""
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    metrics.prepare_workers(1)()
    assert metrics.MULTIPROC_ENV not in os.environ
    cleanup = metrics.prepare_workers(2)
    folder = Path(os.environ[metrics.MULTIPROC_ENV])
    assert folder.is_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (folder / "gauge_livesum_4242.db").write_bytes(b"")
    metrics.worker_exited(4242)  # a dead worker's live gauges go
    assert not (folder / "gauge_livesum_4242.db").exists()
    cleanup()
    assert not folder.exists()
    assert metrics.MULTIPROC_ENV not in os.environ

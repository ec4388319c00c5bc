"""Limit syntax (`100/s burst 200 per owner`), route costs, and the policy loader's one-line
errors for bad limits: zero, negative, huge and non-numeric rates and costs."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.limits.model import (
    MAX_COST,
    MAX_COUNT,
    MAX_TOLERANCE_SECONDS,
    LimitSyntaxError,
    RateLimit,
    parse_cost,
    parse_limit,
)
from gateway.policy.loader import PolicyError, load_policy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/s burst 200", RateLimit("x", 100, 1, 200)),
        ("1000/h", RateLimit("x", 1000, 3600, 1000)),
        ("10/10s", RateLimit("x", 10, 10, 10)),
        ("5/5m per owner", RateLimit("x", 5, 300, 5, "owner")),
        ("7 / day burst 1 per address", RateLimit("x", 7, 86_400, 1, "address")),
        ("3/minutes", RateLimit("x", 3, 60, 3)),
        ("2/s per key", RateLimit("x", 2, 1, 2, "key")),
    ],
)
def test_parse_limit_reads_rate_burst_and_scope(text: str, expected: RateLimit) -> None:
    """Every documented form parses to its count, period in seconds, burst and scope."""
    assert parse_limit("x", text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0/s", "count must be at least 1"),
        ("-5/s", "count must be a positive whole number, got '-5'"),
        ("1.5/s", "count must be a positive whole number"),
        ("ten/s", "count must be a positive whole number, got 'ten'"),
        ("99999999999/s", "over the maximum"),
        ("10/0s", "period must be at least 1"),
        ("10/fortnight", "unknown period unit"),
        ("10/s burst 0", "burst must be at least 1"),
        ("10/s burst -1", "burst must be a positive whole number"),
        ("10/s burst lots", "burst must be a positive whole number"),
        ("10/400d", "over a year"),
        ("1/d burst 1000000", "over 10 years"),
        ("10/s per planet", "unknown scope"),
        ("", "bad rate"),
        ("fast", "bad rate"),
        ("10", "bad rate"),
    ],
)
def test_parse_limit_refuses_bad_rates_with_the_reason(text: str, problem: str) -> None:
    """Zero, negative, fractional, huge and non-numeric parts are refused with a reason."""
    with pytest.raises(LimitSyntaxError, match=problem):
        parse_limit("x", text)


@pytest.mark.parametrize("value", [-1, 1.5, "3", None, True, MAX_COST + 1])
def test_parse_cost_refuses_what_is_not_a_small_whole_number(value: object) -> None:
    """A cost is a whole number from 0 to MAX_COST; booleans and text are not numbers."""
    with pytest.raises(LimitSyntaxError, match="cost"):
        parse_cost(value)


@given(
    count=st.integers(1, MAX_COUNT),
    unit=st.sampled_from(["s", "m", "h", "d"]),
    burst=st.one_of(st.none(), st.integers(1, 10_000)),
    scope=st.sampled_from(["key", "owner", "address"]),
)
def test_a_limit_reads_back_from_its_own_text(
    count: int, unit: str, burst: int | None, scope: str
) -> None:
    """`str(limit)` parses back to the same limit, and every limit's burst fits in 2**53 µs."""
    text = f"{count}/{unit}" + (f" burst {burst}" if burst else "") + f" per {scope}"
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86_400}[unit]
    if (burst or count) * (seconds * 1_000_000 // count) > MAX_TOLERANCE_SECONDS * 1_000_000:
        with pytest.raises(LimitSyntaxError, match="10 years"):
            parse_limit("n", text)
        return
    limit = parse_limit("n", text)
    assert parse_limit("n", str(limit)) == limit
    assert limit.interval_us >= 1
    assert limit.tolerance_us + 2_000_000_000_000_000 < 2**53


@given(st.text(max_size=30))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    """Arbitrary text never raises anything but LimitSyntaxError."""
    with contextlib.suppress(LimitSyntaxError):
        parse_limit("n", text)


BASE = """
permissions:
  - {name: t.read, title: Read}
upstreams:
  main: {url: "http://127.0.0.1:9"}
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + textwrap.dedent(text), encoding="utf-8")
    return load_policy([path])


def test_loader_attaches_named_limits_and_costs_to_routes(tmp_path: Path) -> None:
    """Routes carry their limits (in order), cost and rendered RateLimit-Policy field."""
    policy = load(
        tmp_path,
        """
        limits:
          fast: 100/s burst 200
          pool: 1000/h per owner
          anon: 5/m per address
        routes:
          - {path: /a/**, upstream: main, permission: t.read, limits: [fast, pool], cost: 3}
          - {path: /p/**, upstream: main, auth: none, limits: [anon]}
          - {path: /free/**, upstream: main, permission: t.read, limits: [fast], cost: 0}
          - {path: /none/**, upstream: main, permission: t.read}
        """,
    )
    routes = {r.path: r for r in policy.routes}  # type: ignore[attr-defined]
    a = routes["/a/**"]
    assert [limit.name for limit in a.limits] == ["fast", "pool"]
    assert a.cost == 3
    assert a.limit_policy == '"fast";q=100;w=1, "pool";q=1000;w=3600'
    assert routes["/p/**"].limits[0].scope == "address"
    assert routes["/free/**"].cost == 0
    assert routes["/none/**"].limits == ()
    assert routes["/none/**"].cost == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("limits: {fast: 0/s}", "p.yaml: limits.fast: count must be at least 1"),
        ("limits: {fast: -3/s}", "p.yaml: limits.fast: count must be a positive whole number"),
        ("limits: {fast: lots/s}", "p.yaml: limits.fast: count must be a positive whole number"),
        ("limits: {fast: 1e12/s}", "p.yaml: limits.fast: count must be a positive whole number"),
        ("limits: {fast: 100}", "p.yaml: limits.fast: a limit is text"),
        ("limits: {Fast!: 1/s}", "p.yaml: limits.Fast!: bad limit name"),
        (
            "limits: {fast: 1/s}\nroutes: [{path: /a, upstream: main, permission: t.read, "
            "limits: [slow]}]",
            "p.yaml: routes[0] (* /a): limit 'slow' is not defined (known: fast)",
        ),
        (
            "limits: {fast: 1/s}\nroutes: [{path: /a, upstream: main, permission: t.read, "
            "limits: [fast], cost: -1}]",
            "p.yaml: routes[0] (* /a): cost must be from 0",
        ),
        (
            "limits: {fast: 1/s}\nroutes: [{path: /a, upstream: main, permission: t.read, "
            "limits: [fast], cost: two}]",
            "p.yaml: routes[0] (* /a): cost must be a whole number",
        ),
        (
            "limits: {fast: 1/s}\nroutes: [{path: /a, upstream: main, permission: t.read, "
            "limits: [fast], cost: 99999999999}]",
            "p.yaml: routes[0] (* /a): cost must be from 0",
        ),
        (
            "limits: {fast: 10/s burst 4}\nroutes: [{path: /a, upstream: main, "
            "permission: t.read, limits: [fast], cost: 5}]",
            "cost 5 is over the burst of limit 'fast'",
        ),
        (
            "limits: {fast: 10/s}\nroutes: [{path: /a, upstream: main, auth: none, "
            "limits: [fast]}]",
            "limit 'fast' is per key, but a route with auth: none",
        ),
        (
            "limits: {fast: 10/s}\nroutes: [{path: /a, upstream: main, permission: t.read, "
            "limits: [fast, fast]}]",
            "limit 'fast' is listed twice",
        ),
        (
            "limits: {fast: 10/s}\nroutes: [{path: /a, upstream: main, permission: t.read, "
            "limits: fast}]",
            "limits must be a list of limit names",
        ),
    ],
)
def test_bad_limits_stop_the_load_with_one_line(tmp_path: Path, text: str, problem: str) -> None:
    """Bad limit syntax stops the boot with one line naming the file, the entry and why."""
    with pytest.raises(PolicyError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    assert problem in message
    assert str(tmp_path / "p.yaml") in message


def test_a_limit_defined_in_two_files_is_an_error(tmp_path: Path) -> None:
    """A limit name is defined once across all policy files."""
    (tmp_path / "a.yaml").write_text(BASE + "limits: {fast: 1/s}\n")
    (tmp_path / "b.yaml").write_text("limits: {fast: 2/s}\n")
    with pytest.raises(PolicyError, match=r"b.yaml: limits.fast: limit 'fast' is already defined"):
        load_policy([tmp_path])

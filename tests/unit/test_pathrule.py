"""A key's path restriction: parsing, segment-boundary matching and the `within` relation."""

from __future__ import annotations

import pytest

from gateway.policy.pathrule import PathRule, PathRuleError, parse_path_rule
from gateway.policy.paths import canonicalize


@pytest.mark.parametrize(
    ("rule", "path", "allowed"),
    [
        ("/api/reports", "/api/reports", True),
        ("/api/reports", "/api/reports/", True),
        ("/api/reports", "/api/reports/x", True),
        ("/api/reports", "/api/reports/x/y/", True),
        ("/api/reports", "/api/reportsX", False),
        ("/api/reports", "/api/report", False),
        ("/api/reports", "/api", False),
        ("/api/reports", "/", False),
        ("/api/reports", "/other/api/reports", False),
        ("/api/users/42", "/api/users/421", False),
        ("/", "/", True),
        ("/", "/anything/at/all", True),
    ],
)
def test_prefix_rule_matches_on_segment_boundaries(rule: str, path: str, allowed: bool) -> None:
    """A prefix admits itself and paths below it, never a longer sibling like `/api/reportsX`."""
    assert parse_path_rule(rule).allows(path) is allowed


@pytest.mark.parametrize(
    ("rule", "path", "allowed"),
    [
        ("=/api/x", "/api/x", True),
        ("=/api/x", "/api/x/", False),
        ("=/api/x", "/api/x/y", False),
        ("=/api/x", "/api/xy", False),
        ("=/api/x", "/api", False),
        ("=/api/x/", "/api/x/", True),
        ("=/api/x/", "/api/x", False),
        ("=/", "/", True),
        ("=/", "/a", False),
    ],
)
def test_exact_rule_matches_only_its_path(rule: str, path: str, allowed: bool) -> None:
    """An exact rule admits exactly one canonical path."""
    assert parse_path_rule(rule).allows(path) is allowed


def test_query_is_not_part_of_the_match() -> None:
    """The caller matches the canonical path; any query string leaves the decision unchanged."""
    exact = parse_path_rule("=/api/x")
    prefix = parse_path_rule("/api/reports")
    assert exact.allows(canonicalize("/api/x?page=2&sort=desc").path)
    assert prefix.allows(canonicalize("/api/reports/1?x=/etc/../admin").path)
    assert not exact.allows(canonicalize("/api/y?then=/api/x").path)


def test_rules_match_canonical_paths_not_raw_tricks() -> None:
    """Dot segments are resolved before matching, so they cannot escape a prefix."""
    rule = parse_path_rule("/api/reports")
    assert not rule.allows(canonicalize("/api/reports/../admin").path)
    assert rule.allows(canonicalize("/api/%72eports/./x").path)


@pytest.mark.parametrize(
    ("text", "kind", "path", "shown"),
    [
        ("/api/reports", "prefix", "/api/reports", "/api/reports"),
        ("/api/reports/", "prefix", "/api/reports/", "/api/reports/"),
        ("/", "prefix", "/", "/"),
        ("=/api/x", "exact", "/api/x", "=/api/x"),
        ("=/api/x/", "exact", "/api/x/", "=/api/x/"),
        ("=/", "exact", "/", "=/"),
        ("/caf%C3%A9", "prefix", "/caf%C3%A9", "/caf%C3%A9"),
    ],
)
def test_parse_builds_rule_and_prints_it_back(text: str, kind: str, path: str, shown: str) -> None:
    """Parsing yields the kind and canonical path, kept as written (trailing slash too)."""
    rule = parse_path_rule(text)
    assert (rule.kind, rule.path, str(rule)) == (kind, path, shown)
    assert parse_path_rule(str(rule)) == rule


@pytest.mark.parametrize(
    "text",
    [
        "",
        "=",
        "a/x",
        "api",
        "=api/x",
        "==/api",
        "/a/../b",
        "/a/./b",
        "/a/.",
        "/..",
        "/a%2Fb",
        "/a%2fb",
        "/a//b",
        "//a",
        "/a b",
        "/a\tb",
        "/a\x00b",
        "/a?x=1",
        "/a#f",
        "=/a?x",
        "/a;b",
        "/a\\b",
        "/%41",
        "/caf%c3%a9",
        "/caf\u00e9",
        "http://host/a",
        "/" + "a" * 1024,
    ],
)
def test_bad_rules_are_rejected(text: str) -> None:
    """Relative, empty, non-canonical, encoded-delimiter and over-long rules are refused."""
    with pytest.raises(PathRuleError):
        parse_path_rule(text)


def test_non_canonical_rule_error_suggests_canonical_form() -> None:
    """The error for a rule that is valid but not canonical shows how to write it."""
    with pytest.raises(PathRuleError, match="'/b'"):
        parse_path_rule("/a/../b")


def test_direct_construction_checks_invariants() -> None:
    """Building a PathRule by hand still refuses a relative path or an unknown kind."""
    with pytest.raises(PathRuleError):
        PathRule("prefix", "api")
    with pytest.raises(PathRuleError):
        PathRule("suffix", "/api")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule", "path", "allowed"),
    [
        ("/api/reports/", "/api/reports", False),
        ("/api/reports/", "/api/reports/", True),
        ("/api/reports/", "/api/reports/x", True),
        ("/api/reports/", "/api/reports/x/y", True),
        ("/api/reports/", "/api/reportsX", False),
        ("/api/reports/", "/api", False),
        ("/api/reports", "/api/reports", True),
        ("/api/reports", "/api/reports/x", True),
    ],
)
def test_trailing_slash_admits_only_below(rule: str, path: str, allowed: bool) -> None:
    """Haplo: `/a/` admits only what lies below `/a`, while `/a` admits `/a` itself too."""
    assert parse_path_rule(rule).allows(path) is allowed


@pytest.mark.parametrize(
    ("inner", "outer", "within"),
    [
        ("/api/reports", None, True),
        ("=/api/x", None, True),
        ("/api/reports", "/api", True),
        ("/api/reports/2024", "/api/reports", True),
        ("/api/reports", "/api/reports", True),
        ("/api/reports", "/", True),
        ("/", "/", True),
        ("/api", "/api/reports", False),
        ("/api/reportsX", "/api/reports", False),
        ("/api/reports", "/api/rep", False),
        ("/", "/api", False),
        ("=/api/reports/1", "/api/reports", True),
        ("=/api/reports", "/api/reports", True),
        ("=/api/reports/", "/api/reports", True),
        ("=/api/reportsX", "/api/reports", False),
        ("=/api", "/api/reports", False),
        ("=/api/x", "=/api/x", True),
        ("=/api/x", "=/api/y", False),
        ("=/api/x/", "=/api/x", False),
        ("/api/x", "=/api/x", False),
        ("/", "=/", False),
        ("/api/reports/", "/api/reports", True),
        ("/api/reports/x", "/api/reports/", True),
        ("/api/reports/x/", "/api/reports/", True),
        ("=/api/reports/x", "/api/reports/", True),
        ("=/api/reports/", "/api/reports/", True),
        ("/api/reports", "/api/reports/", False),
        ("=/api/reports", "/api/reports/", False),
        ("/api/reportsX", "/api/reports/", False),
    ],
)
def test_within(inner: str, outer: str | None, within: bool) -> None:
    """A rule is within another when every path it allows the other allows too."""
    outer_rule = None if outer is None else parse_path_rule(outer)
    assert parse_path_rule(inner).within(outer_rule) is within

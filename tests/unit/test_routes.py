"""The compiled route table: templates, specificity, segment boundaries, methods."""

from __future__ import annotations

import time

import pytest

from gateway.policy.model import Requirement, Route
from gateway.policy.routes import (
    CompiledRoutes,
    DuplicateRouteError,
    TemplateError,
    parse_template,
    template_params,
)


def route(path: str, *methods: str, name: str = "") -> Route:
    return Route(
        path=path,
        methods=methods or ("*",),
        upstream="up",
        requirement=Requirement("p"),
        source=name or f"{','.join(methods or ('*',))} {path}",
    )


def matched(table: CompiledRoutes, method: str, path: str) -> str | None:
    found = table.match(method, path)
    return None if found is None else found.route.source


def test_literal_template_matches_only_itself() -> None:
    """A literal template matches its own path and nothing else."""
    table = CompiledRoutes([route("/api/reports")])
    assert matched(table, "GET", "/api/reports") == "* /api/reports"
    assert matched(table, "GET", "/api/report") is None
    assert matched(table, "GET", "/api/reports/x") is None
    assert matched(table, "GET", "/api") is None


def test_literals_are_case_sensitive() -> None:
    """Segments compare exactly, case included."""
    table = CompiledRoutes([route("/api/Reports")])
    assert matched(table, "GET", "/api/reports") is None
    assert matched(table, "GET", "/api/Reports") is not None


def test_root_template_matches_only_root() -> None:
    """`/` is the root only, not a prefix."""
    table = CompiledRoutes([route("/")])
    assert matched(table, "GET", "/") == "* /"
    assert matched(table, "GET", "/x") is None


def test_param_captures_one_segment() -> None:
    """`{name}` captures exactly one segment and returns it in params."""
    table = CompiledRoutes([route("/stores/{storeId}/invoices/{invoiceId}")])
    found = table.match("GET", "/stores/S1/invoices/I9")
    assert found is not None
    assert found.params == {"storeId": "S1", "invoiceId": "I9"}
    assert table.match("GET", "/stores/S1/invoices") is None
    assert table.match("GET", "/stores/S1/x/invoices/I9") is None


def test_param_never_matches_an_empty_segment() -> None:
    """`{name}` needs a non-empty segment: `/stores//invoices` does not match."""
    table = CompiledRoutes([route("/stores/{storeId}/invoices")])
    assert table.match("GET", "/stores//invoices") is None


def test_rest_matches_zero_or_more_segments() -> None:
    """`/api/**` matches `/api`, `/api/` and any deeper path."""
    table = CompiledRoutes([route("/api/**")])
    for path in ("/api", "/api/", "/api/x", "/api/x/y/z", "/api/x/"):
        assert matched(table, "GET", path) == "* /api/**", path


def test_rest_respects_segment_boundaries() -> None:
    """`/api/**` does not match `/apix` or `/apix/y`."""
    table = CompiledRoutes([route("/api/**")])
    assert matched(table, "GET", "/apix") is None
    assert matched(table, "GET", "/apix/y") is None
    assert matched(table, "GET", "/") is None


def test_root_rest_matches_everything() -> None:
    """`/**` is a catch-all, including the root."""
    table = CompiledRoutes([route("/**")])
    assert matched(table, "GET", "/") == "* /**"
    assert matched(table, "GET", "/a/b/c") == "* /**"


def test_rest_keeps_params_captured_before_it() -> None:
    """Parameters before a final `**` are captured."""
    table = CompiledRoutes([route("/stores/{storeId}/**")])
    found = table.match("POST", "/stores/S1/webhooks/W1")
    assert found is not None
    assert found.params == {"storeId": "S1"}


def test_trailing_slash_matches_template_without_it() -> None:
    """`/a/b/` matches the template `/a/b` (one trailing slash is ignored)."""
    table = CompiledRoutes([route("/a/b")])
    assert matched(table, "GET", "/a/b/") == "* /a/b"
    assert matched(table, "GET", "/a/b//") is None


def test_trailing_slash_prefers_exact_over_rest() -> None:
    """With `/a/b` and `/a/b/**`, `/a/b/` goes to the exact template."""
    table = CompiledRoutes([route("/a/b/**"), route("/a/b")])
    assert matched(table, "GET", "/a/b/") == "* /a/b"
    assert matched(table, "GET", "/a/b/c") == "* /a/b/**"


def test_literal_beats_param_beats_rest() -> None:
    """At the same position a literal wins over `{param}`, which wins over `**`."""
    table = CompiledRoutes([route("/api/**"), route("/api/{id}"), route("/api/me"), route("/**")])
    assert matched(table, "GET", "/api/me") == "* /api/me"
    assert matched(table, "GET", "/api/42") == "* /api/{id}"
    assert matched(table, "GET", "/api/42/x") == "* /api/**"
    assert matched(table, "GET", "/other") == "* /**"


def test_leftmost_segment_decides_specificity() -> None:
    """Specificity compares segments left to right: `/y/{b}` beats `/{a}/x` for `/y/x`."""
    table = CompiledRoutes([route("/{a}/x"), route("/y/{b}")])
    assert matched(table, "GET", "/y/x") == "* /y/{b}"
    assert matched(table, "GET", "/z/x") == "* /{a}/x"


def test_longer_exact_template_beats_rest() -> None:
    """`/api/v1/stores/{id}/invoices` beats `/api/v1/stores/{id}/**` for that path."""
    table = CompiledRoutes([route("/api/v1/stores/{id}/**"), route("/api/v1/stores/{id}/invoices")])
    assert matched(table, "GET", "/api/v1/stores/S/invoices") == "* /api/v1/stores/{id}/invoices"
    assert matched(table, "GET", "/api/v1/stores/S/invoices/1") == "* /api/v1/stores/{id}/**"


def test_backtracks_when_literal_branch_dead_ends() -> None:
    """A literal prefix that leads nowhere falls back to a param branch that matches."""
    table = CompiledRoutes([route("/a/b/c"), route("/a/{x}/d")])
    found = table.match("GET", "/a/b/d")
    assert found is not None
    assert found.route.path == "/a/{x}/d"
    assert found.params == {"x": "b"}


def test_params_from_dead_branch_do_not_leak() -> None:
    """Values captured on an abandoned branch are not reported."""
    table = CompiledRoutes([route("/a/{x}/{y}/z"), route("/a/**")])
    found = table.match("GET", "/a/1/2/q")
    assert found is not None
    assert found.route.path == "/a/**"
    assert found.params == {}


def test_method_filters_routes() -> None:
    """A route only matches the methods it lists."""
    table = CompiledRoutes([route("/x", "GET", "POST")])
    assert matched(table, "GET", "/x") is not None
    assert matched(table, "POST", "/x") is not None
    assert matched(table, "DELETE", "/x") is None


def test_method_is_case_insensitive() -> None:
    """The request method is upper-cased before matching."""
    table = CompiledRoutes([route("/x", "GET")])
    assert matched(table, "get", "/x") is not None


def test_star_allows_any_method() -> None:
    """`*` accepts any method, including unusual ones."""
    table = CompiledRoutes([route("/x")])
    for method in ("GET", "POST", "DELETE", "PROPFIND"):
        assert matched(table, method, "/x") is not None


def test_same_shape_with_disjoint_methods_both_match() -> None:
    """Same template, different methods: each method reaches its own route."""
    table = CompiledRoutes([route("/x", "GET"), route("/x", "POST", "PUT")])
    assert matched(table, "GET", "/x") == "GET /x"
    assert matched(table, "PUT", "/x") == "POST,PUT /x"


def test_method_mismatch_falls_back_to_less_specific_route() -> None:
    """`POST /api/x` skips a GET-only `/api/x` and matches `/api/**`."""
    table = CompiledRoutes([route("/api/x", "GET"), route("/api/**", "*")])
    assert matched(table, "GET", "/api/x") == "GET /api/x"
    assert matched(table, "POST", "/api/x") == "* /api/**"


def test_head_matches_get_route() -> None:
    """HEAD matches a route that allows GET."""
    table = CompiledRoutes([route("/x", "GET")])
    assert matched(table, "HEAD", "/x") == "GET /x"


def test_explicit_head_route_beats_get_route() -> None:
    """A route listing HEAD wins over HEAD-via-GET at the same template."""
    table = CompiledRoutes([route("/x", "GET"), route("/x", "HEAD")])
    assert matched(table, "HEAD", "/x") == "HEAD /x"
    assert matched(table, "GET", "/x") == "GET /x"


def test_head_via_get_stays_most_specific() -> None:
    """HEAD on `/a/b` takes the GET route at `/a/b`, not a broader HEAD route."""
    table = CompiledRoutes([route("/a/b", "GET"), route("/a/**", "HEAD")])
    assert matched(table, "HEAD", "/a/b") == "GET /a/b"


def test_head_route_does_not_accept_get() -> None:
    """The HEAD rule is one-way: a HEAD-only route does not accept GET."""
    table = CompiledRoutes([route("/x", "HEAD")])
    assert matched(table, "GET", "/x") is None


def test_no_route_is_none() -> None:
    """Nothing matching is None, never a default route."""
    table = CompiledRoutes([])
    assert table.match("GET", "/") is None


def test_non_canonical_path_is_none() -> None:
    """A path not starting with `/` matches nothing."""
    table = CompiledRoutes([route("/**")])
    assert table.match("GET", "api") is None
    assert table.match("GET", "") is None


def test_duplicate_shape_and_method_is_rejected() -> None:
    """Same shape (param names aside) and overlapping methods raise DuplicateRouteError."""
    first = route("/a/{x}", "GET", name="one")
    second = route("/a/{y}", "GET", "POST", name="two")
    with pytest.raises(DuplicateRouteError) as info:
        CompiledRoutes([first, second])
    assert info.value.route is second
    assert info.value.existing is first


def test_star_overlaps_every_method() -> None:
    """A `*` route duplicates any route of the same shape."""
    with pytest.raises(DuplicateRouteError):
        CompiledRoutes([route("/a/**", "DELETE"), route("/a/**")])


def test_different_shapes_are_not_duplicates() -> None:
    """`/a/{x}` and `/a/b` and `/a/**` can coexist."""
    CompiledRoutes([route("/a/{x}"), route("/a/b"), route("/a/**")])


def test_iterates_in_given_order() -> None:
    """Iteration yields the routes as given."""
    routes = [route("/b"), route("/a"), route("/c/**")]
    assert list(CompiledRoutes(routes)) == routes


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("api", "start with '/'"),
        ("/a/**/b", "'**' may only be the last"),
        ("/a/{1x}", "bad parameter name"),
        ("/a/{x}/{x}", "appears twice"),
        ("/a/./b", "'.'"),
        ("/a/../b", "'..'"),
        ("/a/%2F", "'%'"),
        ("/a?b", "'?'"),
        ("/a#b", "'#'"),
        ("/a//b", "empty segments"),
        ("/a/", "end with '/'"),
        ("/a/*", "bad segment"),
        ("/a/x{y}", "bad segment"),
    ],
)
def test_bad_templates_are_rejected(template: str, problem: str) -> None:
    """Invalid templates raise TemplateError saying what is wrong."""
    with pytest.raises(TemplateError, match=problem.replace("?", r"\?").replace("*", r"\*")):
        parse_template(template)


def test_template_params_lists_names_in_order() -> None:
    """template_params returns the parameter names left to right."""
    assert template_params("/s/{storeId}/i/{invoiceId}/**") == ("storeId", "invoiceId")


def test_many_routes_match_fast() -> None:
    """Hundreds of routes still match in microseconds (the trie, not a linear scan)."""
    routes = [route(f"/svc{i}/items/{{id}}/sub{j}", "GET") for i in range(50) for j in range(10)]
    routes.append(route("/**"))
    table = CompiledRoutes(routes)
    assert matched(table, "GET", "/svc42/items/7/sub3") == "GET /svc42/items/{id}/sub3"
    start = time.perf_counter()
    for _ in range(10_000):
        table.match("GET", "/svc42/items/7/sub3")
    assert time.perf_counter() - start < 2.0  # ~0.05 s normally; generous for slow CI

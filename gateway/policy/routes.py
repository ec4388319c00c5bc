"""The compiled route table: the most specific policy route for a method and a canonical path.

Pure: no I/O. Built once when the policy loads, consulted on every request.

Templates are `/`-separated segments:

- a literal (`invoices`) matches that exact segment (case-sensitive);
- `{name}` matches exactly one non-empty segment and captures it as a parameter;
- a final `**` matches zero or more remaining segments, so `/api/**` matches `/api`, `/api/`
  and `/api/x/y`, never `/apix`.

Matching is on whole segments only. The root template `/` matches only `/`.

Specificity: candidates are compared segment by segment from the left, literal beats `{param}`
beats `**`, and an exact template beats a `**` that would match the same remaining segments
(so `/api/x` beats `/api/**` for `/api/x`, and `/api` beats `/api/**` for `/api`).

Methods: a route lists upper-case methods, or `*` for any. HEAD also matches a route that allows
GET (an explicit HEAD route at the same template wins). A route whose methods do not allow the
request's method is skipped and the search continues with less specific templates: with
`GET /api/x` and `* /api/**`, `POST /api/x` goes to `/api/**`. No candidate means no match
(the caller answers 404; there is no default route).

Trailing slash: one trailing slash on the request path is ignored for matching, so `/a/b/`
matches the template `/a/b` exactly as `/a/b` does (and `/a/b/**` with zero segments). The
upstream still receives the path as requested. Templates never end in `/` (except the root).

Duplicates: two routes with the same shape (parameter names aside) and overlapping methods
(`*` overlaps everything) raise `DuplicateRouteError`; the loader turns it into a policy error.

The index is a segment trie: each node maps literal segments to children and has at most one
parameter child, so a lookup costs one dict probe per segment plus backtracking only where a
literal and a parameter both continue.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from gateway.policy.model import Route, RouteMatch

ANY_METHOD: Final = "*"
REST: Final = "**"
PARAM_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# RFC 3986 pchar minus `%` (templates hold decoded text only) and `*` (reserved for `**`).
LITERAL_RE: Final = re.compile(r"^[A-Za-z0-9\-._~!$&'()+,;=:@]+$")

SegmentKind = Literal["literal", "param", "rest"]


class TemplateError(ValueError):
    """A route path template that cannot be compiled; the message says why."""


class DuplicateRouteError(ValueError):
    """Two routes with the same shape and overlapping methods."""

    def __init__(self, route: Route, existing: Route) -> None:
        super().__init__(
            f"route {route.path!r} duplicates {existing.path!r} "
            f"({existing.source or 'earlier route'}): same path shape and overlapping methods"
        )
        self.route = route
        self.existing = existing


@dataclass(frozen=True, slots=True)
class Segment:
    """One template segment: a literal text, a parameter name, or the final `**`."""

    kind: SegmentKind
    value: str


def parse_template(template: str) -> tuple[Segment, ...]:
    """Split and validate a path template; raises TemplateError naming the problem."""
    if not isinstance(template, str) or not template.startswith("/"):
        raise TemplateError("path must start with '/'")
    for bad in ("%", "?", "#"):
        if bad in template:
            raise TemplateError(f"path must not contain {bad!r}")
    if template == "/":
        return ()
    raw = template[1:].split("/")
    segments: list[Segment] = []
    seen: set[str] = set()
    for index, text in enumerate(raw):
        if text == "":
            raise TemplateError("path must not contain empty segments or end with '/'")
        if text in (".", ".."):
            raise TemplateError(f"path must not contain a {text!r} segment")
        if text == REST:
            if index != len(raw) - 1:
                raise TemplateError("'**' may only be the last segment")
            segments.append(Segment("rest", REST))
        elif text.startswith("{") and text.endswith("}"):
            name = text[1:-1]
            if not PARAM_RE.match(name):
                raise TemplateError(
                    f"bad parameter name {name!r} (use letters, digits and '_', "
                    "not starting with a digit)"
                )
            if name in seen:
                raise TemplateError(f"parameter {{{name}}} appears twice")
            seen.add(name)
            segments.append(Segment("param", name))
        elif not LITERAL_RE.match(text):
            raise TemplateError(
                f"bad segment {text!r} (a literal, a whole-segment {{param}} or a final '**')"
            )
        else:
            segments.append(Segment("literal", text))
    return tuple(segments)


def template_params(template: str) -> tuple[str, ...]:
    """The parameter names of a valid template, left to right."""
    return tuple(s.value for s in parse_template(template) if s.kind == "param")


def _shape(segments: Sequence[Segment]) -> tuple[str, ...]:
    return tuple("{}" if s.kind == "param" else s.value for s in segments)


@dataclass(frozen=True, slots=True)
class _Entry:
    route: Route
    params: tuple[str, ...]  # names of the `{param}` segments, in path order
    methods: frozenset[str]
    any_method: bool

    def overlaps(self, other: _Entry) -> bool:
        return self.any_method or other.any_method or bool(self.methods & other.methods)


class _Node:
    __slots__ = ("exact", "literals", "param", "rest")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.exact: list[_Entry] = []  # templates ending at this node
        self.rest: list[_Entry] = []  # templates ending at this node with `/**`


def _pick(entries: Sequence[_Entry], method: str) -> _Entry | None:
    """The entry that accepts `method`: explicit beats `*` beats HEAD-via-GET."""
    fallback: _Entry | None = None
    for entry in entries:
        if method in entry.methods:
            return entry
        head_via_get = method == "HEAD" and "GET" in entry.methods
        if entry.any_method or (head_via_get and fallback is None):
            fallback = entry
    return fallback


def _split(path: str) -> list[str] | None:
    if not path.startswith("/"):
        return None
    body = path[1:]
    if body.endswith("/"):
        body = body[:-1]  # one trailing slash is ignored, see the module docstring
    return body.split("/") if body else []


MATCH_CACHE_SIZE: Final = 4096


class CompiledRoutes:
    """A `RouteTable` over a fixed list of routes, indexed as a segment trie."""

    __slots__ = ("_match_cached", "_root", "_routes")

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = tuple(routes)
        # Most traffic repeats a small set of (method, path) pairs; the table is immutable,
        # so answers can be memoised. Bounded, so paths full of ids cannot grow it.
        self._match_cached = functools.lru_cache(maxsize=MATCH_CACHE_SIZE)(self._match)
        self._root = _Node()
        shapes: dict[tuple[str, ...], list[_Entry]] = {}
        for route in self._routes:
            segments = parse_template(route.path)
            methods = frozenset(m.upper() for m in route.methods)
            entry = _Entry(
                route=route,
                params=tuple(s.value for s in segments if s.kind == "param"),
                methods=methods - {ANY_METHOD},
                any_method=ANY_METHOD in methods or not methods,
            )
            same_shape = shapes.setdefault(_shape(segments), [])
            for other in same_shape:
                if entry.overlaps(other):
                    raise DuplicateRouteError(route, other.route)
            same_shape.append(entry)
            self._insert(segments, entry)

    def _insert(self, segments: Sequence[Segment], entry: _Entry) -> None:
        node = self._root
        for segment in segments:
            if segment.kind == "rest":
                node.rest.append(entry)
                return
            if segment.kind == "param":
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.literals.setdefault(segment.value, _Node())
        node.exact.append(entry)

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The most specific route allowing `method` for the canonical `path`, or None.

        The result may be shared between calls: treat it (and its params) as read-only.
        """
        return self._match_cached(method, path)

    def _match(self, method: str, path: str) -> RouteMatch | None:
        segments = _split(path)
        if segments is None:
            return None
        values: list[str] = []
        found = self._search(self._root, segments, 0, method.upper(), values)
        if found is None:
            return None
        return RouteMatch(found.route, dict(zip(found.params, values, strict=True)))

    def _search(
        self, node: _Node, segments: list[str], index: int, method: str, values: list[str]
    ) -> _Entry | None:
        # Depth-first in specificity order (literal, then param, then `**`), so the first
        # accepting entry is the most specific one. `values` holds the captured parameters.
        if index == len(segments):
            entry = _pick(node.exact, method)
            if entry is not None:
                return entry
        else:
            segment = segments[index]
            child = node.literals.get(segment)
            if child is not None:
                entry = self._search(child, segments, index + 1, method, values)
                if entry is not None:
                    return entry
            if node.param is not None and segment:
                values.append(segment)
                entry = self._search(node.param, segments, index + 1, method, values)
                if entry is not None:
                    return entry
                values.pop()
        return _pick(node.rest, method)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

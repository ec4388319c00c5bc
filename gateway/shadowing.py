"""`gateway policy check`: policy routes the gateway's own paths would shadow.

The gateway's pages, APIs and operations endpoints are matched before the data plane, so a
policy route for `/docs` or `/v1/**` never sees (some of) its requests. The own paths are read
from the application's router, as the fast front reads them, so the list cannot drift; with
`admin_listen` set, the admin paths are off the public listener and shadow nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from gateway.admin_listener import is_admin_path
from gateway.policy.model import Route
from gateway.settings import Settings


def own_paths(settings: Settings) -> list[str]:
    """Sample paths the gateway serves itself on its public listener: exact paths, and a
    path under each dynamic prefix (`/api/v1/users/x`)."""
    from gateway.app import create_app
    from gateway.proxy.front_server import gateway_surfaces

    # Only the router is read: no tracing for an application that never serves.
    exact, prefixes = gateway_surfaces(create_app(replace(settings, tracing="off")))
    paths = sorted(exact) + [prefix + "x" for prefix in prefixes]
    if settings.admin_listen is not None:
        paths = [p for p in paths if not is_admin_path(p.removesuffix("x"))]
    return paths


def matches(template: str, path: str) -> bool:
    """Whether a policy route template (`{param}` one segment, a final `**` any rest) takes
    `path`."""
    want = template.strip("/").split("/") if template != "/" else []
    have = path.strip("/").split("/") if path != "/" else []
    for i, segment in enumerate(want):
        if segment == "**":
            return True
        if i >= len(have):
            return False
        if not (segment.startswith("{") and segment.endswith("}")) and segment != have[i]:
            return False
    return len(want) == len(have)


def shadowed(routes: Iterable[Route], own: list[str]) -> list[str]:
    """One warning per route that an own path shadows."""
    warnings = []
    for route in routes:
        hit = [
            path.removesuffix("x") + "…" if path.endswith("/x") else path
            for path in own
            if matches(route.path, path)
        ]
        if hit:
            where = f" ({route.source})" if route.source else ""
            shown = ", ".join(hit[:3]) + (f" and {len(hit) - 3} more" if len(hit) > 3 else "")
            warnings.append(
                f"warning: route {route.path}{where} is shadowed by the gateway's own {shown}: "
                "those requests never reach the upstream"
            )
    return warnings

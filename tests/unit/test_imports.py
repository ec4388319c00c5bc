"""No import circle among the modules of gateway/proxy and gateway/policy (every import counts,
including those inside functions and under TYPE_CHECKING)."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
CHECKED = ("gateway.proxy", "gateway.policy")


def _modules() -> dict[str, Path]:
    out = {}
    for path in GATEWAY.rglob("*.py"):
        parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                found = resolve(target) if target.startswith("gateway") else None
                if found is not None and found != name:
                    graph[name].add(found)
    return graph


def _circle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_circle_in_proxy_and_policy() -> None:
    """No module of gateway/proxy or gateway/policy imports, however indirectly, itself."""
    graph = _graph(_modules())
    circles = [
        " -> ".join(circle)
        for name in sorted(graph)
        if name.startswith(CHECKED) and (circle := _circle_from(name, graph)) is not None
    ]
    assert circles == []


def test_the_check_sees_a_circle() -> None:
    """The circle finder itself finds a two-module circle."""
    assert _circle_from("a", {"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]

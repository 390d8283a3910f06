"""hub/ imports one way: no module of hub/ reaches itself again through its imports.

Every import statement counts, at the top of a module, inside a function or under
`if TYPE_CHECKING:`: a cycle hidden in a late import is still a cycle in the design. An
import of a package counts as an import of its `__init__.py`; an import of `a.b` also runs
`a/__init__.py`, which is counted too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def hub_modules() -> dict[str, Path]:
    return {module_of(p): p for p in sorted((ROOT / "hub").rglob("*.py"))}


def imported(tree: ast.AST, here: str, is_package: bool, known: set[str]) -> set[str]:
    """The hub modules that `tree` (module `here`) imports."""
    out: set[str] = set()

    def add(name: str) -> None:
        # `import a.b.c` runs a, a.b and a.b.c; only modules of hub/ are edges.
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in known and prefix != here:
                out.add(prefix)

    package = here if is_package else here.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            add(mod)
            for alias in node.names:  # `from hub.admin import watch` imports a module
                if f"{mod}.{alias.name}" in known:
                    add(f"{mod}.{alias.name}")
    return out


def import_graph() -> dict[str, set[str]]:
    mods = hub_modules()
    known = set(mods)
    return {m: imported(ast.parse(p.read_text(), str(p)), m, p.name == "__init__.py", known)
            for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = GREY
        stack.append(m)
        for n in sorted(graph[m]):
            if colour[n] == GREY:
                return stack[stack.index(n):] + [n]
            if colour[n] == WHITE and (found := visit(n)) is not None:
                return found
        stack.pop()
        colour[m] = BLACK
        return None

    for m in sorted(graph):
        if colour[m] == WHITE and (found := visit(m)) is not None:
            return found
    return None


def test_hub_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "hub.service" in graph and "hub.delivery.mqtt_link" in graph  # the walk found hub/
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in hub/: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("source, cyclic", [
    ({"a": "import hub.b", "b": "def f():\n    from hub import a"}, True),
    ({"a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hub.b import X",
      "b": "from hub.a import Y"}, True),
    ({"a": "from hub.b import X", "b": "import os"}, False),
])
def test_the_check_sees_late_and_type_only_imports(source: dict[str, str], cyclic: bool) -> None:
    known = {f"hub.{m}" for m in source} | {"hub"}
    graph = {f"hub.{m}": imported(ast.parse(text), f"hub.{m}", False, known)
             for m, text in source.items()}
    graph["hub"] = set()
    assert (find_cycle(graph) is not None) is cyclic

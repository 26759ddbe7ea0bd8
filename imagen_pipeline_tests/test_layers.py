"""The package's import graph: its parts form the layers docs/architecture.md draws, and no
module imports itself back through others.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a cycle
hidden in a function is still a knot a reader has to untie.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import imagen_pipeline

PACKAGE = Path(imagen_pipeline.__file__).parent

LAYERS: list[set[str]] = [
    {"__init__", "errors", "run_tags"},
    {"atomic_files", "naming", "prompts", "config", "db"},
    {"backends", "alerts", "storage"},
    {"generate"},
    {"output", "cloud", "queue", "housekeeping"},
    {"usage"},
    {"defs", "instance"},
    {"doctor"},
    {"cli", "definitions"},
]
"""Bottom to top: a part may import parts of its own layer or of the layers below it."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """``imagen_pipeline.generate.planning`` -> ``generate``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, modules: set[str]) -> Iterator[str]:
    """The package's modules that the file imports, wherever in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in names if name in modules)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {
        module: {target for target in imports_of(path, modules) if target != module}
        for module, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_the_parts_do_not_import_each_other_in_a_circle() -> None:
    parts: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        parts.setdefault(part_of(module), set()).update(
            part_of(target) for target in targets if part_of(target) != part_of(module)
        )
    assert cycles(parts) == []


def test_every_import_goes_to_the_same_layer_or_below() -> None:
    layer = {part: number for number, parts in enumerate(LAYERS) for part in parts}
    graph = import_graph()
    assert {part_of(module) for module in graph} <= set(layer), "a part missing from LAYERS"
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if layer[part_of(target)] > layer[part_of(module)]
    )
    assert upward == []


def test_the_check_finds_a_cycle_and_an_upward_import() -> None:
    """The checks above can fail: a made-up graph with a circle is caught."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert part_of("imagen_pipeline.generate.planning") == "generate"

"""Module sizes (issue 25): no module of the package over 500 lines, and no module that
defines Dagster ops over 250: a module past them holds more than one concern."""

from __future__ import annotations

import ast
from pathlib import Path

import imagen_pipeline

PACKAGE = Path(imagen_pipeline.__file__).parent
MAX_LINES = 500
MAX_OP_MODULE_LINES = 250


def lines_of(path: Path) -> int:
    """The file's number of lines, as ``wc -l`` counts them."""
    return path.read_text(encoding="utf-8").count("\n")


def defines_ops(path: Path) -> bool:
    """Whether a function in the file is decorated with Dagster's ``op`` (``@dg.op``,
    ``@op``, with or without arguments)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name == "op":
                return True
    return False


def modules() -> dict[str, Path]:
    """Every module of the package by its path inside it."""
    return {str(path.relative_to(PACKAGE)): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_is_over_500_lines() -> None:
    over = {name: lines_of(path) for name, path in modules().items()}
    assert {name: n for name, n in over.items() if n > MAX_LINES} == {}


def test_no_op_module_is_over_250_lines() -> None:
    op_modules = {name: lines_of(path) for name, path in modules().items() if defines_ops(path)}
    assert {"defs/ops.py", "defs/generate_ops.py"} <= set(op_modules), op_modules
    assert {name: n for name, n in op_modules.items() if n > MAX_OP_MODULE_LINES} == {}


def test_op_modules_are_found_by_their_decorators(tmp_path: Path) -> None:
    written = {
        "plain.py": "import dagster as dg\n\n@dg.op\ndef a() -> None: ...\n",
        "called.py": "from dagster import op\n\n@op(tags={'kind': 'x'})\ndef a() -> None: ...\n",
        "none.py": "import functools\n\n@functools.cache\ndef a() -> None: ...\n",
    }
    for name, text in written.items():
        (tmp_path / name).write_text(text)
    assert {name: defines_ops(tmp_path / name) for name in written} == {
        "plain.py": True,
        "called.py": True,
        "none.py": False,
    }

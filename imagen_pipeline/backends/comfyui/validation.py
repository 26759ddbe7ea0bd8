"""A workflow checked against a server's ``/object_info``, before anything is queued.

It follows what ComfyUI v0.8.0 checks in ``POST /prompt`` (``execution.validate_prompt``,
compared against the real server run on the CPU, 2026-12-02): every node's class must
exist, in any node; inputs are validated only for the nodes that lead to an output node
(the server neither checks nor runs the others). Each problem names the node, its class and
the input: an unknown class, a missing required input, a model file (or any other list
value) the server does not offer. The LoadImage input the request's source image goes to is
not looked up in the server's list: the file is uploaded just before the prompt is queued
(the class must still exist). Links to absent nodes are refused earlier, when the
workflow loads.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from imagen_pipeline.backends.comfyui.workflow import (
    is_link,
    node_sort_key,
    nodes_leading_to_outputs,
)

MAX_LISTED_OPTIONS = 20
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")
"""File endings that make a list value a model file in messages."""


def combo_options(spec: Any) -> list[str] | None:
    """The choices of a list input in ``/object_info``: old style (``[[...], {...}]``) or new
    (``["COMBO", {"options": [...]}]``); None for other input kinds."""
    if not isinstance(spec, list) or not spec:
        return None
    kind = spec[0]
    if isinstance(kind, list):
        return [str(item) for item in kind]
    if kind == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        if isinstance(options, list):
            return [str(item) for item in options]
    return None


def listed(names: list[str]) -> str:
    """Choices for a message, sorted and shortened to the first few."""
    items = sorted(names)
    shown = ", ".join(items[:MAX_LISTED_OPTIONS]) or "none"
    if len(items) > MAX_LISTED_OPTIONS:
        shown += f" (and {len(items) - MAX_LISTED_OPTIONS} more)"
    return shown


def input_spec(info: Mapping[str, Any], name: str) -> Any:
    """The ``/object_info`` spec of input ``name`` (required or optional), or None."""
    sections = info.get("input") or {}
    return (sections.get("required") or {}).get(name) or (sections.get("optional") or {}).get(name)


def value_problem(value: Any, spec: Any) -> str | None:
    """Why a literal ``value`` is not among a list input's choices, or None."""
    options = combo_options(spec)
    if options is None or str(value) in options:
        return None
    what = "model file" if str(value).endswith(MODEL_SUFFIXES) else "value"
    return f"{what} {value!r} is not on the server; available: {listed(options)}"


def unknown_class(node_id: str, class_type: str) -> str:
    """The problem of a node whose class the server does not have."""
    return (
        f"node {node_id} ({class_type}): node class {class_type} does not exist on the server "
        "(a custom node that is not installed?)"
    )


def workflow_problems(
    graph: Mapping[str, Any],
    object_info: Callable[[str], dict[str, Any] | None],
    uploaded: Collection[tuple[str, str]] = (),
) -> list[str]:
    """Every problem the server would report for ``graph`` (empty: it would accept it).

    ``object_info(class_type)`` answers the server's entry for a node class, None when the
    class is not installed; it is asked once per class. ``uploaded`` (node id, input name)
    pairs name files uploaded per request: their values are not checked.
    """
    infos: dict[str, dict[str, Any] | None] = {}
    problems = []
    for node_id in sorted(graph, key=node_sort_key):
        class_type = str(graph[node_id].get("class_type"))
        if class_type not in infos:
            infos[class_type] = object_info(class_type)
        if infos[class_type] is None:
            problems.append(unknown_class(node_id, class_type))
    if problems:
        return problems
    outputs = [
        node_id
        for node_id in sorted(graph, key=node_sort_key)
        if (infos[str(graph[node_id]["class_type"])] or {}).get("output_node")
    ]
    if not outputs:
        return ["the workflow has no output node (such as SaveImage)"]
    for node_id in nodes_leading_to_outputs(graph, outputs):
        class_type = str(graph[node_id]["class_type"])
        info = infos[class_type] or {}
        problems.extend(
            f"node {node_id} ({class_type}) input {name!r}: {problem}"
            for name, problem in _input_problems(graph[node_id], info)
            if (node_id, name) not in uploaded
        )
    return problems


def _input_problems(node: Mapping[str, Any], info: Mapping[str, Any]) -> list[tuple[str, str]]:
    sections = info.get("input") or {}
    required = sections.get("required") or {}
    optional = sections.get("optional") or {}
    inputs = node.get("inputs") or {}
    problems = []
    for name, spec in {**required, **optional}.items():
        if name not in inputs:
            if name in required:
                problems.append((name, "required input is missing"))
            continue
        value = inputs[name]
        if is_link(value):
            continue
        problem = value_problem(value, spec)
        if problem:
            problems.append((name, problem))
    return problems

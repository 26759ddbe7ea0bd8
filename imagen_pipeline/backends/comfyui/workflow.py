"""ComfyUI workflows: a template or file, the request-field mapping and its validation.

A workflow is a graph in ComfyUI's API format (``{node id: {"class_type", "inputs"}}``, what
"Export (API)" saves). The mapping says where each request field goes as
``"<node id>.<input name>"``; it is checked against the graph when the config loads, so a
typo fails there and not on the GPU box.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagen_pipeline.backends.comfyui.templates import TEMPLATES, builtin_names

REQUEST_FIELDS: dict[str, tuple[type, ...]] = {
    "prompt": (str,),
    "negative": (str,),
    "seed": (int,),
    "width": (int,),
    "height": (int,),
    "steps": (int,),
    "guidance": (int, float),
    "strength": (int, float),
    "image": (str,),
    "filename_prefix": (str,),
}
"""Request fields a workflow input can receive, with the value types that input must hold.
``image`` is the request's source image (uploaded, its server-side name set there);
``strength`` its img2img strength (a sampler's ``denoise``)."""

SOURCE_IMAGE_INPUTS: dict[str, str] = {"LoadImage": "image"}
"""Node class -> the input the ``image`` field may be mapped to: a file in the server's
input folder, which ``POST /upload/image`` writes."""

MODEL_INPUTS: dict[str, str] = {
    "UNETLoader": "unet_name",
    "CheckpointLoaderSimple": "ckpt_name",
}
"""Loader class -> input naming the model file reported in metadata."""

MODEL_FILE_INPUTS: dict[str, tuple[str, ...]] = {
    "UNETLoader": ("unet_name",),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "DualCLIPLoader": ("clip_name1", "clip_name2"),
    "CLIPLoader": ("clip_name",),
    "VAELoader": ("vae_name",),
    "LoraLoader": ("lora_name",),
    "LoraLoaderModelOnly": ("lora_name",),
}
"""Loader class -> inputs naming model files the server must have (checked before submitting)."""

IMAGE_FILE_INPUTS: dict[str, tuple[str, ...]] = {
    "LoadImage": ("image",),
    "LoadImageMask": ("image",),
    "LoadImageOutput": ("image",),
}
"""Node class -> inputs naming an image file on the server (read when the prompt runs)."""

COUNT_INPUTS: dict[str, tuple[str, ...]] = {
    "RepeatLatentBatch": ("amount",),
    "RepeatImageBatch": ("amount",),
}
"""Node class -> inputs that multiply the images one prompt makes (besides any
``batch_size``, which every latent and image source in ComfyUI names so)."""


@dataclass(frozen=True)
class Target:
    """One input of one node: ``<node id>.<input name>``."""

    node_id: str
    input_name: str

    def __str__(self) -> str:
        return f"{self.node_id}.{self.input_name}"


@dataclass(frozen=True)
class ModelFile:
    """A model file a loader node names, e.g. node 12 UNETLoader.unet_name."""

    node_id: str
    class_type: str
    input_name: str
    filename: str


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow setting: where (field path), what, and the value."""

    loc: tuple[str, ...]
    message: str
    value: Any


class WorkflowError(Exception):
    """The workflow, its mapping or its overrides are invalid; ``problems`` lists each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{'.'.join(p.loc)}: {p.message}" for p in problems))
        self.problems = problems


def parse_target(text: Any) -> Target:
    """``"25.noise_seed"`` -> Target("25", "noise_seed"); raises ``ValueError`` otherwise."""
    if isinstance(text, str):
        node_id, dot, input_name = text.strip().rpartition(".")
        if dot and node_id and input_name:
            return Target(node_id, input_name)
    raise ValueError("expected '<node id>.<input name>' such as '6.text'")


def node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, then the others by name."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def is_link(value: Any) -> bool:
    """An input value that connects another node's output: ``[node id, output index]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def nodes_leading_to_outputs(graph: Mapping[str, Any], outputs: list[str]) -> list[str]:
    """The output nodes and every node they depend on through links."""
    seen: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in seen or node_id not in graph:
            return
        seen.append(node_id)
        for value in (graph[node_id].get("inputs") or {}).values():
            if is_link(value):
                visit(value[0])

    for node_id in outputs:
        visit(node_id)
    return sorted(seen, key=node_sort_key)


@dataclass(frozen=True)
class Workflow:
    """A validated graph (config overrides applied) and where the request fields go."""

    name: str
    graph: dict[str, Any]
    inputs: dict[str, tuple[Target, ...]] = field(default_factory=dict)

    def class_type(self, node_id: str) -> str:
        """The class of ``node_id`` (empty if there is no such node)."""
        node = self.graph.get(node_id)
        return str(node["class_type"]) if node else ""

    def model_files(
        self, graph: Mapping[str, Any] | None = None, *, reachable_only: bool = False
    ) -> list[ModelFile]:
        """Model files the loader nodes of ``graph`` (default: the workflow's) name; with
        ``reachable_only``, only those of nodes the save nodes depend on (the server neither
        checks nor runs the others)."""
        files = []
        graph = self.graph if graph is None else graph
        node_ids = list(graph)
        if reachable_only and self.output_node_ids():
            node_ids = nodes_leading_to_outputs(graph, self.output_node_ids())
        for node_id in sorted(node_ids, key=node_sort_key):
            node = graph[node_id]
            for input_name in MODEL_FILE_INPUTS.get(node["class_type"], ()):
                value = node["inputs"].get(input_name)
                if isinstance(value, str):
                    files.append(ModelFile(node_id, node["class_type"], input_name, value))
        return files

    def model_file(self) -> str | None:
        """The diffusion model or checkpoint file of the first loader node, if any."""
        for item in self.model_files():
            if MODEL_INPUTS.get(item.class_type) == item.input_name:
                return item.filename
        return None

    def field_at(self, target: Target) -> str | None:
        """The request field mapped to ``target``, if any."""
        for request_field, targets in self.inputs.items():
            if target in targets:
                return request_field
        return None

    def sets_count(self, target: Target) -> bool:
        """True for an input that makes one prompt render several images (a batch size)."""
        class_type = self.class_type(target.node_id)
        return target.input_name == "batch_size" or target.input_name in COUNT_INPUTS.get(
            class_type, ()
        )

    def names_file(self, target: Target) -> bool:
        """True for an input naming a file on the server: a model file or an image to load."""
        class_type = self.class_type(target.node_id)
        return target.input_name in (
            *MODEL_FILE_INPUTS.get(class_type, ()),
            *IMAGE_FILE_INPUTS.get(class_type, ()),
        )

    def check_target(self, target: Target) -> str | None:
        """Why ``target`` cannot take a literal value (missing node/input, a link), or None."""
        return _target_problem(self.graph, target)

    def value_at(self, graph: Mapping[str, Any], request_field: str) -> Any:
        """The value at the first target of ``request_field`` in ``graph`` (None if unmapped)."""
        targets = self.inputs.get(request_field)
        if not targets:
            return None
        return graph[targets[0].node_id]["inputs"].get(targets[0].input_name)

    def build(
        self, values: Mapping[str, Any], extra: Mapping[Target, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """A copy of the graph with ``values`` (by request field) and ``extra`` set.

        Returns the graph and the request fields in ``values`` that have no mapped input.
        """
        graph = copy.deepcopy(self.graph)
        unmapped = []
        for request_field, value in values.items():
            targets = self.inputs.get(request_field)
            if not targets:
                unmapped.append(request_field)
                continue
            for target in targets:
                graph[target.node_id]["inputs"][target.input_name] = value
        for target, value in extra.items():
            graph[target.node_id]["inputs"][target.input_name] = value
        return graph, unmapped

    def source_targets(self) -> tuple[Target, ...]:
        """The LoadImage inputs the request's source image goes to (empty: text only)."""
        return self.inputs.get("image", ())

    def output_node_ids(self) -> list[str]:
        """Nodes the filename prefix goes to (the save nodes), in mapping order."""
        return [target.node_id for target in self.inputs.get("filename_prefix", ())]


def load_workflow(
    workflow: str, inputs: Mapping[str, Any], overrides: Mapping[str, Any]
) -> Workflow:
    """Load a built-in template or an API-format file and validate the mapping against it.

    ``inputs`` entries extend or replace a template's own mapping (``None`` unmaps a field);
    ``overrides`` set fixed input values. Raises :class:`WorkflowError` listing every problem.
    """
    template = TEMPLATES.get(workflow)
    if template is not None:
        graph = template.graph()
        base_inputs: Mapping[str, Any] = template.inputs
    else:
        graph = _read_graph_file(workflow)
        base_inputs = {}
    problems = _graph_problems(graph)
    if problems:
        raise WorkflowError(problems)
    fixed = _parse_overrides(graph, overrides, problems)
    for target, value in fixed.items():
        graph[target.node_id]["inputs"][target.input_name] = value
    mapping = _parse_inputs(graph, {**base_inputs, **inputs}, problems)
    if "prompt" not in mapping and not any(p.loc[:2] == ("inputs", "prompt") for p in problems):
        problems.append(
            Problem(
                ("inputs", "prompt"),
                "the prompt must be mapped to a text input, e.g. '6.text' "
                "(the node ids are in the API-format JSON)",
                inputs.get("prompt"),
            )
        )
    if problems:
        raise WorkflowError(problems)
    return Workflow(name=workflow, graph=graph, inputs=mapping)


def _read_graph_file(workflow: str) -> Any:
    looks_like_path = "/" in workflow or workflow.endswith(".json") or workflow.startswith("~")
    if not looks_like_path:
        raise WorkflowError(
            [
                Problem(
                    ("workflow",),
                    f"unknown built-in workflow; built-in: {', '.join(builtin_names())}; or "
                    "the absolute path of a workflow exported with 'Export (API)'",
                    workflow,
                )
            ]
        )
    path = Path(workflow).expanduser()
    if not path.is_absolute():
        raise WorkflowError(
            [
                Problem(
                    ("workflow",),
                    "a workflow file must be given as an absolute path (or ~/...), because "
                    "Dagster runs start in other working directories",
                    workflow,
                )
            ]
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise WorkflowError(
            [Problem(("workflow",), f"cannot read {path}: {reason}", workflow)]
        ) from None
    except ValueError as error:
        raise WorkflowError(
            [Problem(("workflow",), f"{path} is not valid JSON: {error}", workflow)]
        ) from None


def _graph_problems(graph: Any) -> list[Problem]:
    def problem(message: str) -> Problem:
        return Problem(("workflow",), message, None)

    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        return [
            problem(
                "this is a UI workflow (it has 'nodes' and 'links'); save it from ComfyUI with "
                "Workflow > Export (API) instead"
            )
        ]
    if not isinstance(graph, dict) or not graph:
        return [problem("not an API-format workflow: expected a JSON object of nodes by id")]
    problems = []
    for node_id, node in graph.items():
        if (
            not isinstance(node, dict)
            or not isinstance(node.get("class_type"), str)
            or not isinstance(node.get("inputs"), dict)
        ):
            problems.append(problem(f"node {node_id!r} needs a 'class_type' and an 'inputs' map"))
            continue
        for input_name, value in node["inputs"].items():
            if is_link(value) and value[0] not in graph:
                problems.append(
                    problem(
                        f"node {node_id} ({node['class_type']}) input {input_name!r} is linked "
                        f"from node {value[0]!r}, which is not in the workflow"
                    )
                )
    return problems


def _describe_nodes(graph: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{node_id} ({graph[node_id]['class_type']})"
        for node_id in sorted(graph, key=node_sort_key)
    )


def _target_problem(graph: Mapping[str, Any], target: Target) -> str | None:
    node = graph.get(target.node_id)
    if node is None:
        return f"no node {target.node_id!r} in the workflow; its nodes: {_describe_nodes(graph)}"
    label = f"node {target.node_id} ({node['class_type']})"
    node_inputs = node["inputs"]
    if target.input_name not in node_inputs:
        return (
            f"{label} has no input {target.input_name!r}; its inputs: "
            f"{', '.join(node_inputs) or 'none'}"
        )
    value = node_inputs[target.input_name]
    if is_link(value):
        return (
            f"{label} input {target.input_name!r} is linked from node {value[0]}; map an input "
            "that holds a value"
        )
    return None


def _parse_targets(value: Any) -> list[Target]:
    items: Iterable[Any] = value if isinstance(value, list | tuple) else [value]
    targets = [parse_target(item) for item in items]
    if not targets:
        raise ValueError("expected '<node id>.<input name>' or a non-empty list of them")
    return targets


def _parse_inputs(
    graph: Mapping[str, Any], inputs: Mapping[str, Any], problems: list[Problem]
) -> dict[str, tuple[Target, ...]]:
    mapping: dict[str, tuple[Target, ...]] = {}
    for request_field, value in inputs.items():
        loc = ("inputs", str(request_field))
        if request_field not in REQUEST_FIELDS:
            problems.append(
                Problem(
                    loc,
                    f"not a request field; mappable fields: {', '.join(REQUEST_FIELDS)}",
                    value,
                )
            )
            continue
        if value is None or value == []:
            continue
        try:
            targets = _parse_targets(value)
        except ValueError as error:
            problems.append(Problem(loc, str(error), value))
            continue
        valid = True
        for target in targets:
            reason = (
                _target_problem(graph, target)
                or _type_problem(graph, target, request_field)
                or _source_problem(graph, target, request_field)
            )
            if reason:
                problems.append(Problem(loc, reason, value))
                valid = False
        if valid:
            mapping[request_field] = tuple(targets)
    return mapping


def _type_problem(graph: Mapping[str, Any], target: Target, request_field: str) -> str | None:
    current = graph[target.node_id]["inputs"][target.input_name]
    expected = REQUEST_FIELDS[request_field]
    if isinstance(current, bool) or not isinstance(current, expected):
        kind = "text" if expected == (str,) else "a number"
        return (
            f"node {target.node_id} ({graph[target.node_id]['class_type']}) input "
            f"{target.input_name!r} holds {current!r}, but {request_field} is {kind}"
        )
    return None


def _source_problem(graph: Mapping[str, Any], target: Target, request_field: str) -> str | None:
    if request_field != "image":
        return None
    class_type = graph[target.node_id]["class_type"]
    if SOURCE_IMAGE_INPUTS.get(class_type) == target.input_name:
        return None
    return (
        f"node {target.node_id} ({class_type}) input {target.input_name!r} is not a LoadImage "
        "node's image input; image goes to one (the uploaded file's name)"
    )


def _parse_overrides(
    graph: Mapping[str, Any], overrides: Mapping[str, Any], problems: list[Problem]
) -> dict[Target, Any]:
    fixed: dict[Target, Any] = {}
    for key, value in overrides.items():
        loc = ("overrides", str(key))
        try:
            target = parse_target(key)
        except ValueError as error:
            problems.append(Problem(loc, str(error), value))
            continue
        reason = _target_problem(graph, target)
        if reason is None and (value is None or not isinstance(value, str | int | float | bool)):
            reason = "must be a text, number or true/false value"
        if reason:
            problems.append(Problem(loc, reason, value))
        else:
            fixed[target] = value
    return fixed

"""``imagen backends --check`` for a ComfyUI instance: each server's ``/system_stats``
(reachable, version, VRAM), then the workflow against its ``/object_info`` (node classes,
required inputs, model files; a source image's LoadImage node must exist)."""

from __future__ import annotations

from typing import Any

from imagen_pipeline.backends.comfyui.client import ComfyUIClient
from imagen_pipeline.backends.comfyui.servers import Server
from imagen_pipeline.backends.comfyui.validation import workflow_problems
from imagen_pipeline.backends.comfyui.workflow import Workflow
from imagen_pipeline.backends.contract import BackendCheck
from imagen_pipeline.errors import BackendError

GIB = 1024**3


def check_servers(
    servers: list[Server], workflow: Workflow, request_timeout_s: float, log: Any
) -> BackendCheck:
    """Every server's state; with several, the detail names each one, and the instance is
    reachable and has the model when at least one server is and has it."""
    results = [
        (server, check_server(server, workflow, request_timeout_s, log)) for server in servers
    ]
    if len(results) == 1:
        return results[0][1]
    up = [result for _, result in results if result.reachable]
    return BackendCheck(
        reachable=bool(up),
        credentials=None,
        model_present=any(result.model_present for result in up) if up else None,
        detail=" | ".join(
            f"{server.name} ({server.url}, {server.slots.limit} slots): "
            + ("" if result.reachable else "down: ")
            + result.detail
            for server, result in results
        ),
    )


def check_server(
    server: Server, workflow: Workflow, request_timeout_s: float, log: Any
) -> BackendCheck:
    """One server: reachable, its version and VRAM, the workflow valid on it."""
    with ComfyUIClient(server.url, request_timeout_s, log) as client:
        try:
            stats = client.system_stats()
        except BackendError as error:
            return BackendCheck(
                reachable=False, credentials=None, model_present=None, detail=str(error)
            )
        summary = describe_system(stats)
        try:
            uploaded = {(t.node_id, t.input_name) for t in workflow.source_targets()}
            problems = workflow_problems(workflow.graph, client.object_info, uploaded)
        except BackendError as error:
            return BackendCheck(
                reachable=True,
                credentials=None,
                model_present=None,
                detail=f"{summary}; workflow check failed: {error}",
            )
    if problems:
        return BackendCheck(
            reachable=True,
            credentials=None,
            model_present=False,
            detail=f"{summary}; workflow {workflow.name}: " + "; ".join(problems),
        )
    model = workflow.model_file()
    sources = ", ".join(
        f"node {t.node_id} ({workflow.class_type(t.node_id)})" for t in workflow.source_targets()
    )
    return BackendCheck(
        reachable=True,
        credentials=None,
        model_present=True,
        detail=f"{summary}; workflow {workflow.name} valid on the server"
        + (f", model {model} present" if model else " (it needs no model file)")
        + (f"; the source image is uploaded to {sources}" if sources else ""),
    )


def describe_system(stats: dict[str, Any]) -> str:
    """``ComfyUI 0.3.43, NVIDIA ... 12.3 of 16.0 GiB VRAM free`` from ``/system_stats``."""
    system = stats.get("system") or {}
    parts = [f"ComfyUI {system.get('comfyui_version') or 'unknown version'}"]
    for device in stats.get("devices") or []:
        total, free = device.get("vram_total"), device.get("vram_free")
        name = device.get("name") or device.get("type") or "device"
        if isinstance(total, int | float) and isinstance(free, int | float) and total > 0:
            parts.append(f"{name}: {free / GIB:.1f} of {total / GIB:.1f} GiB VRAM free")
        else:
            parts.append(str(name))
    return ", ".join(parts)

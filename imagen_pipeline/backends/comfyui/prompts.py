"""One prompt on one ComfyUI server: its ids, derived from the run; adopting an earlier
attempt's prompt or submitting this attempt's; following it to the end; and picking the
saved image from its history entry."""

from __future__ import annotations

import uuid
from typing import Any

from imagen_pipeline.backends.comfyui.client import (
    ComfyUIClient,
    Submitted,
    Where,
    describe_prompt_error,
)
from imagen_pipeline.backends.comfyui.watch import PromptWatch, WatchSettings
from imagen_pipeline.backends.comfyui.workflow import Workflow
from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.errors import ImagenError, PermanentBackendError

ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "imagen-pipeline/comfyui")
"""Namespace of the prompt and client ids derived from a run."""


def prompt_id_for(context: GenerationContext, attempt: int) -> str:
    """The prompt id of ``attempt`` of this run's step (and variation): the same on every
    call, unique per run."""
    key = f"prompt\x00{context.run_id}\x00{context.instance_name}\x00{attempt}"
    if context.variation:
        key += f"\x00{context.variation}"
    return str(uuid.uuid5(ID_NAMESPACE, key))


def client_id_for(context: GenerationContext) -> str:
    """The websocket client id of this run: events of every attempt's prompt come to it."""
    return uuid.uuid5(ID_NAMESPACE, f"client\x00{context.run_id}\x00{context.instance_name}").hex


def pick_image(entry: dict[str, Any], preferred_nodes: list[str]) -> dict[str, Any] | None:
    """The saved image of a history entry: from the filename-prefix node if it has one, else
    the first ``output`` image, else any image (e.g. a preview)."""
    outputs = entry.get("outputs")
    if not isinstance(outputs, dict):
        return None
    images: list[tuple[str, dict[str, Any]]] = []
    for node_id, output in outputs.items():
        for image in (output or {}).get("images") or []:
            if isinstance(image, dict) and image.get("filename"):
                images.append((str(node_id), image))
    for wanted in preferred_nodes:
        for node_id, image in images:
            if node_id == wanted:
                return image
    for _, image in images:
        if image.get("type", "output") == "output":
            return image
    return images[0][1] if images else None


def run_prompt(
    client: ComfyUIClient,
    workflow: Workflow,
    graph: dict[str, Any],
    context: GenerationContext,
    deadline: float,
    watch_settings: WatchSettings,
) -> tuple[Submitted, dict[str, Any]]:
    """Adopt an earlier attempt's prompt or submit this attempt's, then wait for it; a run
    stopped meanwhile cancels the prompt on the server."""
    log = context.log
    client_id = client_id_for(context)
    active = prompt_id_for(context, context.attempt)
    socket = client.open_socket(client_id)
    if socket is None:
        log.info(f"ComfyUI {client.url}: no event socket; following the prompt via /history")
    watch: PromptWatch | None = None
    try:
        submitted, finished = adopt(client, context)
        if submitted is None:
            submitted = client.submit(graph, active, client_id)
            log.info(
                f"ComfyUI prompt {submitted.prompt_id} queued on {client.url}"
                + (" (recovered after a lost response)" if submitted.recovered else "")
            )
        active = submitted.prompt_id
        check_outputs(client, workflow, submitted)
        if finished is not None:
            return submitted, finished
        watch = PromptWatch(
            client,
            prompt_id=active,
            client_id=client_id,
            socket=socket,
            class_types={node: workflow.class_type(node) for node in graph},
            settings=watch_settings,
            deadline=deadline,
            log=log,
            progress=context.progress,
        )
        socket = None
        return submitted, watch.wait()
    except ImagenError:
        raise
    except BaseException:
        outcome = client.cancel(active)
        log.warning(f"ComfyUI prompt {active}: run stopped; {outcome}")
        raise
    finally:
        if watch is not None:
            watch.close()
        if socket is not None:
            socket.close()


def check_outputs(client: ComfyUIClient, workflow: Workflow, submitted: Submitted) -> None:
    """A prompt queued with some outputs dropped (their nodes failed validation): fine while
    the image's output node runs, else canceled and refused with the details."""
    dropped = submitted.dropped_outputs()
    if not dropped:
        return
    detail = describe_prompt_error(
        {
            "error": {"message": "outputs failed validation"},
            "node_errors": submitted.node_errors,
        }
    )
    wanted = set(workflow.output_node_ids())
    if wanted and not wanted <= dropped:
        client.log.warning(
            f"ComfyUI prompt {submitted.prompt_id}: the server dropped outputs "
            f"{', '.join(sorted(dropped))}: {detail}"
        )
        return
    outcome = client.cancel(submitted.prompt_id)
    raise PermanentBackendError(
        f"ComfyUI rejected the prompt's output node: {detail} (prompt "
        f"{submitted.prompt_id} {outcome})"
    )


def adopt(
    client: ComfyUIClient, context: GenerationContext
) -> tuple[Submitted | None, dict[str, Any] | None]:
    """An earlier attempt's prompt that is still queued or finished well, if any."""
    for attempt in range(context.attempt - 1, -1, -1):
        prompt_id = prompt_id_for(context, attempt)
        location = client.locate(prompt_id)
        if location.where in (Where.RUNNING, Where.PENDING):
            context.log.info(
                f"ComfyUI prompt {prompt_id} of attempt {attempt + 1} is still "
                f"{location.where.value}; following it instead of submitting another"
            )
            return Submitted(prompt_id, None, recovered=True), None
        entry = location.entry
        status = (entry or {}).get("status") or {}
        if entry is not None and status.get("status_str") != "error":
            context.log.info(
                f"ComfyUI prompt {prompt_id} of attempt {attempt + 1} already finished; "
                "using its image"
            )
            return Submitted(prompt_id, None, recovered=True), entry
    return None, None

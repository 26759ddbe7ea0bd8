"""Which of an instance's ComfyUI servers makes the image: the least busy one that has the
workflow's model files, a queue slot on it, and the next server when one cannot be reached
or loses the prompt. With one server its errors are the job's."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from typing import Any

from imagen_pipeline.backends.comfyui.client import ComfyUIClient, Submitted, Where
from imagen_pipeline.backends.comfyui.prompts import pick_image, prompt_id_for, run_prompt
from imagen_pipeline.backends.comfyui.servers import Server, dispatch_order, take_least_busy
from imagen_pipeline.backends.comfyui.slots import SLOT_POLL_S, Slot
from imagen_pipeline.backends.comfyui.sources import Upload
from imagen_pipeline.backends.comfyui.watch import WatchSettings
from imagen_pipeline.backends.comfyui.workflow import Workflow
from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    PermanentBackendError,
    TransientBackendError,
    UnreachableBackendError,
)


@dataclass(frozen=True)
class DispatchSettings:
    """What dispatching needs of the instance's settings."""

    request_timeout_s: float
    fallback_after_s: float | None
    """With a ``fallback``: how long to wait for a free slot before the fallback's turn."""
    watch: WatchSettings


@dataclass(frozen=True)
class Made:
    """What one dispatch produced: where, which prompt, the image and who was skipped."""

    server: Server
    submitted: Submitted
    image_ref: dict[str, Any]
    image: bytes
    redispatched_from: list[str]
    uploaded: list[str]
    """The names the server gave the uploaded source images."""


def dispatch(
    servers: list[Server],
    workflow: Workflow,
    graph: dict[str, Any],
    context: GenerationContext,
    deadline: float,
    settings: DispatchSettings,
    uploads: tuple[Upload, ...] = (),
) -> Made:
    """Make the image on one of the servers: least busy first, never one that lacks the
    model files; the source images uploaded to the one that takes the job; a server that
    cannot be reached (or loses the prompt) is marked down and the job goes to the next one.
    With one server its errors are the job's."""
    log = context.log
    files = workflow.model_files(graph, reachable_only=True)
    holder = f"run {context.run_id} (pid {os.getpid()})"
    skipped: dict[str, str] = {}
    checked: set[str] = set()
    while True:
        ready = []
        candidates, following = _candidates(servers, context, skipped, settings)
        for server in candidates:
            if server.name not in checked:
                try:
                    with ComfyUIClient(server.url, settings.request_timeout_s, log) as probe:
                        probe.preflight(files)
                except (PermanentBackendError, UnreachableBackendError) as error:
                    if len(servers) == 1:
                        if isinstance(error, UnreachableBackendError):
                            error.summary = "its server is unreachable"
                        raise
                    _skip(server, error, skipped, log)
                    continue
                checked.add(server.name)
            ready.append(server)
        if not ready:
            raise UnreachableBackendError(
                f"no ComfyUI server of {context.instance_name or 'this backend'} can take "
                "the job: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()),
                summary=skip_summary(skipped),
            )
        server, slot = _take_slot(ready, holder, deadline, log, settings, following)
        held: Slot | None = slot
        try:
            with ComfyUIClient(server.url, settings.request_timeout_s, log) as client:
                sent, uploaded = with_uploads(client, graph, uploads)
                submitted, entry = run_prompt(
                    client, workflow, sent, context, deadline, settings.watch
                )
                slot.release()
                held = None
                image_ref = pick_image(entry, workflow.output_node_ids())
                if image_ref is None:
                    raise PermanentBackendError(
                        f"ComfyUI prompt {submitted.prompt_id} finished without an output "
                        "image (does the workflow end in a SaveImage node?)"
                    )
                image = client.download(image_ref)
        except UnreachableBackendError as error:
            if len(servers) == 1:
                server.mark_down(str(error))
                error.summary = "its server is unreachable or lost the prompt"
                raise
            _skip(server, error, skipped, log)
            continue
        finally:
            if held is not None:
                held.release()
        server.mark_up()
        return Made(server, submitted, image_ref, image, list(skipped), uploaded)


def with_uploads(
    client: ComfyUIClient, graph: dict[str, Any], uploads: tuple[Upload, ...]
) -> tuple[dict[str, Any], list[str]]:
    """``graph`` with each upload's server-side name in its LoadImage inputs (the files
    uploaded first, unless the server has them), and those names."""
    if not uploads:
        return graph, []
    sent = copy.deepcopy(graph)
    names = []
    for upload in uploads:
        name = client.upload_image(upload.path, upload.name, upload.mime)
        names.append(name)
        for target in upload.targets:
            sent[target.node_id]["inputs"][target.input_name] = name
    return sent, names


def _candidates(
    servers: list[Server],
    context: GenerationContext,
    skipped: dict[str, str],
    settings: DispatchSettings,
) -> tuple[list[Server], Server | None]:
    """The servers to try, in dispatch order: those not skipped in this attempt and not
    waiting out a backoff (all of them when every one is); and, on a retry, the server that
    still has an earlier attempt's prompt, which comes first, so the prompt is followed
    there instead of made again elsewhere."""
    now = time.time()
    order = [server for server in dispatch_order(servers, now) if server.name not in skipped]
    live = [server for server in order if server.down_until() <= now]
    order = live or order
    if context.attempt == 0 or len(servers) == 1:
        return order, None
    for server in order:
        with ComfyUIClient(server.url, settings.request_timeout_s, context.log) as client:
            for attempt in range(context.attempt):
                try:
                    found = client.locate(prompt_id_for(context, attempt)).where
                except BackendError:
                    break
                if found is not Where.MISSING:
                    return [server, *(other for other in order if other is not server)], server
    return order, None


def _skip(server: Server, error: BackendError, skipped: dict[str, str], log: Any) -> None:
    if isinstance(error, UnreachableBackendError):
        backoff = server.mark_down(str(error))
        reason = f"unreachable ({error}); skipped for {backoff:g}s"
    else:
        reason = f"lacks what the workflow needs ({error})"
    skipped[server.name] = reason
    log.warning(f"ComfyUI server {server.name}: {reason}; trying another server")


def _take_slot(
    servers: list[Server],
    holder: str,
    deadline: float,
    log: Any,
    settings: DispatchSettings,
    preferred: Server | None = None,
) -> tuple[Server, Slot]:
    """A queue slot on ``preferred`` or else the least busy of ``servers`` (see
    :func:`take_least_busy`), waiting for one until ``deadline`` (with a fallback: for at
    most ``fallback_after_s``, then the fallback's turn)."""
    waited = False
    fallback_after_s = settings.fallback_after_s
    fall_back_at = deadline if fallback_after_s is None else time.monotonic() + fallback_after_s
    while True:
        taken = take_least_busy(servers, holder, preferred)
        if taken is not None:
            return taken
        if not waited:
            waited = True
            for server in servers:
                held_by = "; ".join(server.slots.holders()) or "other runs"
                log.info(
                    f"ComfyUI {server.url}: all {server.slots.limit} queue slots "
                    f"(pool_limit) are taken ({held_by}); waiting for one"
                )
        now = time.monotonic()
        if fallback_after_s is not None and now >= fall_back_at and fall_back_at < deadline:
            raise BackendUnavailableError(
                f"ComfyUI {', '.join(s.url for s in servers)}: no queue slot came free "
                f"within fallback_after_s ({fallback_after_s:g}s)",
                summary=f"no queue slot free within {fallback_after_s:g}s",
            )
        if now >= deadline:
            where = ", ".join(f"{s.url} (pool_limit {s.slots.limit})" for s in servers)
            if len(servers) == 1:
                where = f"{servers[0].url}: no queue slot (pool_limit {servers[0].slots.limit})"
            else:
                where = f"{where}: no queue slot"
            raise TransientBackendError(f"ComfyUI {where} came free before timeout_s")
        time.sleep(SLOT_POLL_S)


def skip_summary(skipped: dict[str, str]) -> str:
    """``2 servers unreachable`` / ``1 server unreachable, 1 without what the workflow
    needs``: why no server could take the job."""
    unreachable = sum(1 for why in skipped.values() if why.startswith("unreachable"))
    parts = []
    for count, what in (
        (unreachable, "unreachable"),
        (len(skipped) - unreachable, "without what the workflow needs"),
    ):
        if count:
            parts.append(f"{count} server{'s' if count > 1 else ''} {what}")
    return ", ".join(parts)

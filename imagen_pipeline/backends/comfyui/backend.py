"""The ComfyUI backend: FLUX (or any workflow) on the user's own GPU box behind ComfyUI.

One generation loads the workflow, writes the request into the mapped inputs, checks the
server has the model files, takes a queue slot (``pool_limit``), submits with a prompt id
derived from the run, follows it on the websocket (``/history`` when the socket drops),
and downloads the saved image. docs/backends.md has the config block, the templates, the
mapping and the error table.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from imagen_pipeline.backends.comfyui.client import (
    ComfyUIClient,
    Submitted,
    Where,
    describe_prompt_error,
)
from imagen_pipeline.backends.comfyui.servers import (
    Server,
    ServerConfig,
    dispatch_order,
    normalized_url,
    take_least_busy,
)
from imagen_pipeline.backends.comfyui.slots import SLOT_POLL_S, QueueSlots, Slot, default_state_dir
from imagen_pipeline.backends.comfyui.validation import workflow_problems
from imagen_pipeline.backends.comfyui.watch import PromptWatch, WatchSettings
from imagen_pipeline.backends.comfyui.workflow import (
    Target,
    Workflow,
    WorkflowError,
    load_workflow,
    parse_target,
)
from imagen_pipeline.backends.contract import (
    BackendCheck,
    GenerationContext,
    GenerationMetadata,
    GenerationRequest,
    GenerationResult,
    ImageBackend,
    derived_seed,
    verify_image,
)
from imagen_pipeline.backends.options import (
    OptionRule,
    is_file_input,
    names_url_or_file,
    set_by_field,
)
from imagen_pipeline.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    ImagenError,
    PermanentBackendError,
    TransientBackendError,
    UnreachableBackendError,
)

ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "imagen-pipeline/comfyui")
"""Namespace of the prompt and client ids derived from a run."""

GIB = 1024**3
MAX_GUIDANCE = 100
"""Largest guidance ComfyUI's FluxGuidance node takes."""
CLIENT_GUIDANCE = OptionRule(min=1, max=10)
"""What a web client may send as ``guidance`` when ``client_options`` is unset (FLUX's
useful range; it changes neither the GPU time nor the image count)."""


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


@dataclass(frozen=True)
class Made:
    """What one dispatch produced: where, which prompt, the image and who was skipped."""

    server: Server
    submitted: Submitted
    image_ref: dict[str, Any]
    image: bytes
    redispatched_from: list[str]


class ComfyUIBackend(ImageBackend):
    """Images from a ComfyUI server (the GPU box); costs nothing per image."""

    pool: Literal["gpu", "cloud"] = Field(
        default="gpu",
        description="Dagster op pool of the generate step; 'gpu' (imagen_gpu) for a GPU box.",
    )
    url: str | None = Field(
        default=None,
        description="ComfyUI server, e.g. http://mrock:8188; for several boxes use servers.",
    )
    servers: list[ServerConfig] = Field(
        default_factory=list,
        description="Several ComfyUI servers as one backend: each job goes to the least busy "
        "one that has the workflow's model files; one that cannot be reached is skipped for "
        "a while and its job sent to another. Entries: url, label, slots.",
    )
    workflow: str = Field(
        default="flux-dev",
        description="Built-in template (flux-dev, flux-schnell, flux-fp8) or the absolute path "
        "of an API-format workflow JSON ('Export (API)' in ComfyUI).",
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Request field -> '<node id>.<input name>' (or a list of them): prompt, "
        "negative, seed, width, height, steps, guidance, filename_prefix. Templates bring "
        "their own; entries here extend or replace them, null unmaps one.",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="'<node id>.<input name>' -> fixed value set on every prompt (e.g. a "
        "different model file or scheduler).",
    )
    guidance: float | None = Field(
        default=None,
        ge=0,
        le=MAX_GUIDANCE,
        description="FLUX guidance; empty: the workflow's value.",
    )
    timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Longest time for one image: waiting for a queue slot, in ComfyUI's queue "
        "and on the GPU. Then the prompt is interrupted and the step retried.",
    )
    pool_limit: int = Field(
        default=2,
        ge=1,
        description="Prompts this pipeline keeps in the server's queue at once, across all "
        "runs on this machine (2: one on the GPU, one waiting).",
    )
    state_dir: str | None = Field(
        default=None,
        description="Folder for the queue slot lock files; empty: $XDG_STATE_HOME/imagen/comfyui.",
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of each HTTP request and websocket connect."
    )
    poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between /history polls when the websocket is down.",
    )
    check_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="Silence on the websocket after which /queue and /history are asked "
        "where the prompt is (a restarted server has lost it).",
    )
    reconnect_grace_s: float = Field(
        default=60.0,
        gt=0,
        description="How long the server may be unreachable while a prompt is queued before "
        "the attempt fails transiently.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return normalized_url(value) if value is not None else None

    @model_validator(mode="after")
    def _check_servers(self) -> ComfyUIBackend:
        if (self.url is None) == (not self.servers):
            raise ValueError(
                "set url (one server) or servers (several), not both"
                if self.url
                else "set url (e.g. http://mrock:8188) or servers (a list of {url, label, slots})"
            )
        for what, values in (
            ("url", [server.url for server in self.servers]),
            ("label", [server.name() for server in self.servers]),
        ):
            repeated = sorted({value for value in values if values.count(value) > 1})
            if repeated:
                raise ValueError(f"servers: each {what} may appear once; repeated: {repeated}")
        return self

    def configured_servers(self) -> list[ServerConfig]:
        """The servers of this instance (``url`` is one server)."""
        return self.servers or [ServerConfig(url=str(self.url))]

    def queue_slots(self) -> dict[str, int]:
        """Each server's slots, by URL (instances naming the same URL share its lock files)."""
        return {config.url: config.slots or self.pool_limit for config in self.configured_servers()}

    def _servers(self, log: Any) -> list[Server]:
        state_dir = Path(self.state_dir).expanduser() if self.state_dir else default_state_dir()
        return [
            Server(
                config.name(),
                config.url,
                QueueSlots(config.url, config.slots or self.pool_limit, state_dir, log),
            )
            for config in self.configured_servers()
        ]

    @model_validator(mode="after")
    def _check_workflow(self) -> ComfyUIBackend:
        try:
            load_workflow(self.workflow, self.inputs, self.overrides)
        except WorkflowError as error:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "comfyui_workflow", "{problem}", {"problem": p.message}
                        ),
                        loc=p.loc,
                        input=p.value,
                    )
                    for p in error.problems
                ],
            ) from None
        return self

    def load(self) -> Workflow:
        """The workflow with its mapping; the file may have changed since the config loaded."""
        try:
            return load_workflow(self.workflow, self.inputs, self.overrides)
        except WorkflowError as error:
            raise ConfigError(f"comfyui workflow {self.workflow}: {error}") from None

    def model_name(self) -> str:
        """The model file of the workflow's loader node (UNETLoader or checkpoint)."""
        workflow = self.load()
        return workflow.model_file() or Path(workflow.name).stem

    # -- options ------------------------------------------------------------------------------

    @cached_property
    def _option_workflow(self) -> Workflow:
        """The workflow that option checks look at (loaded once per adapter)."""
        return self.load()

    def default_client_options(self) -> dict[str, OptionRule]:
        """``guidance`` from 1 to 10 when the workflow maps guidance; nothing else."""
        if "guidance" in self._option_workflow.inputs:
            return {"guidance": CLIENT_GUIDANCE}
        return {}

    def reserved_option(self, key: str) -> str | None:
        """A node path that reaches a mapped request field, the output name or a batch size."""
        reason = super().reserved_option(key)
        target = _target(key)
        if reason is not None or target is None:
            return reason
        workflow = self._option_workflow
        field = workflow.field_at(target)
        if field == "guidance":
            return "sets guidance, which only the guidance option may set"
        if field == "filename_prefix":
            return "sets the output file name, which only the pipeline sets"
        if field is not None:
            return set_by_field(field)
        if workflow.sets_count(target):
            return set_by_field("count", "how many images one prompt makes")
        return None

    def option_problem(self, key: str, value: Any) -> str | None:
        """``guidance`` must be a number; any other key an existing literal input of the
        workflow, set to text, a number or true/false (a list would link nodes)."""
        if key == "guidance":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"must be a number, got {value!r}"
            return None if 0 <= value <= MAX_GUIDANCE else f"must be from 0 to {MAX_GUIDANCE}"
        target = _target(key)
        if target is None:
            return (
                "is not an option of a ComfyUI workflow; its options are guidance and "
                "'<node id>.<input name>' (e.g. '17.scheduler')"
            )
        problem = self._option_workflow.check_target(target)
        if problem is not None:
            return problem
        if value is None or not isinstance(value, str | int | float | bool):
            return "must be a text, number or true/false value"
        return None

    def takes_file(self, key: str) -> bool:
        """A loader's model file, a LoadImage image, or an input named like a file or URL."""
        target = _target(key)
        if target is None:
            return is_file_input(key)
        current = self._option_workflow.graph.get(target.node_id, {}).get("inputs", {})
        value = current.get(target.input_name)
        return (
            self._option_workflow.names_file(target)
            or is_file_input(target.input_name)
            or (isinstance(value, str) and names_url_or_file(value))
        )

    # -- generate ----------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, context: GenerationContext) -> GenerationResult:
        """Submit (or adopt) this run's prompt, follow it to the end and download the image."""
        log = context.log
        workflow = self.load()
        seed = request.seed if request.seed is not None else derived_seed(context)
        values: dict[str, Any] = {
            "prompt": request.prompt,
            "seed": seed,
            "width": request.width,
            "height": request.height,
            "filename_prefix": f"imagen/{context.run_id}",
        }
        if request.negative:
            values["negative"] = request.negative
        if request.steps is not None:
            values["steps"] = request.steps
        extra = self._request_options(request, values)
        graph, unmapped = workflow.build(values, extra)
        for request_field in unmapped:
            if request_field != "filename_prefix":
                log.info(
                    f"ComfyUI workflow {workflow.name}: no input is mapped for "
                    f"{request_field}; ignored it"
                )
        started = time.monotonic()
        deadline = started + self.timeout_s
        made = self._dispatch(workflow, graph, context, deadline)
        image = made.image
        facts = verify_image(image, "ComfyUI output")
        steps = workflow.value_at(graph, "steps")
        return GenerationResult(
            image=image,
            facts=facts,
            metadata=GenerationMetadata(
                model=workflow.model_file() or Path(workflow.name).stem,
                seed=seed if "seed" in workflow.inputs else None,
                steps=steps if isinstance(steps, int) else None,
                server=made.server.name,
                latency_s=round(time.monotonic() - started, 4),
                cost_usd=0.0,
                extra={
                    "prompt_id": made.submitted.prompt_id,
                    "recovered_prompt": made.submitted.recovered,
                    "workflow": workflow.name,
                    "comfyui_url": made.server.url,
                    "redispatched_from": made.redispatched_from or None,
                    "output_file": "/".join(
                        part
                        for part in (
                            made.image_ref.get("subfolder"),
                            made.image_ref.get("filename"),
                        )
                        if part
                    ),
                    "guidance": workflow.value_at(graph, "guidance"),
                },
            ),
        )

    def _dispatch(
        self,
        workflow: Workflow,
        graph: dict[str, Any],
        context: GenerationContext,
        deadline: float,
    ) -> Made:
        """Make the image on one of the servers: least busy first, never one that lacks the
        model files; a server that cannot be reached (or loses the prompt) is marked down
        and the job goes to the next one. With one server its errors are the job's."""
        log = context.log
        servers = self._servers(log)
        files = workflow.model_files(graph, reachable_only=True)
        holder = f"run {context.run_id} (pid {os.getpid()})"
        skipped: dict[str, str] = {}
        checked: set[str] = set()
        while True:
            ready = []
            candidates, following = self._candidates(servers, context, skipped)
            for server in candidates:
                if server.name not in checked:
                    try:
                        with ComfyUIClient(server.url, self.request_timeout_s, log) as probe:
                            probe.preflight(files)
                    except (PermanentBackendError, UnreachableBackendError) as error:
                        if len(servers) == 1:
                            if isinstance(error, UnreachableBackendError):
                                error.summary = "its server is unreachable"
                            raise
                        self._skip(server, error, skipped, log)
                        continue
                    checked.add(server.name)
                ready.append(server)
            if not ready:
                raise UnreachableBackendError(
                    f"no ComfyUI server of {context.instance_name or 'this backend'} can take "
                    "the job: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()),
                    summary=skip_summary(skipped),
                )
            server, slot = self._take_slot(ready, holder, deadline, log, following)
            held: Slot | None = slot
            try:
                with ComfyUIClient(server.url, self.request_timeout_s, log) as client:
                    submitted, entry = self._run(client, workflow, graph, context, deadline)
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
                self._skip(server, error, skipped, log)
                continue
            finally:
                if held is not None:
                    held.release()
            server.mark_up()
            return Made(server, submitted, image_ref, image, list(skipped))

    def _candidates(
        self, servers: list[Server], context: GenerationContext, skipped: dict[str, str]
    ) -> tuple[list[Server], Server | None]:
        """The servers to try, in dispatch order: those not skipped in this attempt and not
        waiting out a backoff (all of them when every one is); and, on a retry, the server
        that still has an earlier attempt's prompt, which comes first, so the prompt is
        followed there instead of made again elsewhere."""
        now = time.time()
        order = [server for server in dispatch_order(servers, now) if server.name not in skipped]
        live = [server for server in order if server.down_until() <= now]
        order = live or order
        if context.attempt == 0 or len(servers) == 1:
            return order, None
        for server in order:
            with ComfyUIClient(server.url, self.request_timeout_s, context.log) as client:
                for attempt in range(context.attempt):
                    try:
                        found = client.locate(prompt_id_for(context, attempt)).where
                    except BackendError:
                        break
                    if found is not Where.MISSING:
                        return [server, *(other for other in order if other is not server)], server
        return order, None

    @staticmethod
    def _skip(server: Server, error: BackendError, skipped: dict[str, str], log: Any) -> None:
        if isinstance(error, UnreachableBackendError):
            backoff = server.mark_down(str(error))
            reason = f"unreachable ({error}); skipped for {backoff:g}s"
        else:
            reason = f"lacks what the workflow needs ({error})"
        skipped[server.name] = reason
        log.warning(f"ComfyUI server {server.name}: {reason}; trying another server")

    def _take_slot(
        self,
        servers: list[Server],
        holder: str,
        deadline: float,
        log: Any,
        preferred: Server | None = None,
    ) -> tuple[Server, Slot]:
        """A queue slot on ``preferred`` or else the least busy of ``servers`` (see
        :func:`take_least_busy`), waiting for one until ``deadline`` (with a fallback: for at
        most ``fallback_after_s``, then the fallback's turn)."""
        waited = False
        fall_back_at = time.monotonic() + self.fallback_after_s if self.fallback else deadline
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
            if self.fallback and now >= fall_back_at and fall_back_at < deadline:
                raise BackendUnavailableError(
                    f"ComfyUI {', '.join(s.url for s in servers)}: no queue slot came free "
                    f"within fallback_after_s ({self.fallback_after_s:g}s)",
                    summary=f"no queue slot free within {self.fallback_after_s:g}s",
                )
            if now >= deadline:
                where = ", ".join(f"{s.url} (pool_limit {s.slots.limit})" for s in servers)
                if len(servers) == 1:
                    where = f"{servers[0].url}: no queue slot (pool_limit {servers[0].slots.limit})"
                else:
                    where = f"{where}: no queue slot"
                raise TransientBackendError(f"ComfyUI {where} came free before timeout_s")
            time.sleep(SLOT_POLL_S)

    def _request_options(
        self, request: GenerationRequest, values: dict[str, Any]
    ) -> dict[Target, Any]:
        """Guidance from the request or config, and per-request ``<node>.<input>`` values
        (checked by the rules for anyone; a client's were checked against client_options
        before the call)."""
        self.check_options(request.backend_opts, from_client=False)
        options = dict(request.backend_opts)
        guidance = options.pop("guidance", self.guidance)
        if guidance is not None:
            values["guidance"] = float(guidance)
        return {parse_target(key): value for key, value in options.items()}

    def _run(
        self,
        client: ComfyUIClient,
        workflow: Workflow,
        graph: dict[str, Any],
        context: GenerationContext,
        deadline: float,
    ) -> tuple[Submitted, dict[str, Any]]:
        """Adopt an earlier attempt's prompt or submit this attempt's, then wait for it."""
        log = context.log
        client_id = client_id_for(context)
        active = prompt_id_for(context, context.attempt)
        socket = client.open_socket(client_id)
        if socket is None:
            log.info(f"ComfyUI {client.url}: no event socket; following the prompt via /history")
        watch: PromptWatch | None = None
        try:
            submitted, finished = self._adopt(client, context)
            if submitted is None:
                submitted = client.submit(graph, active, client_id)
                log.info(
                    f"ComfyUI prompt {submitted.prompt_id} queued on {client.url}"
                    + (" (recovered after a lost response)" if submitted.recovered else "")
                )
            active = submitted.prompt_id
            self._check_outputs(client, workflow, submitted)
            if finished is not None:
                return submitted, finished
            watch = PromptWatch(
                client,
                prompt_id=active,
                client_id=client_id,
                socket=socket,
                class_types={node: workflow.class_type(node) for node in graph},
                settings=WatchSettings(
                    poll_interval_s=self.poll_interval_s,
                    check_interval_s=self.check_interval_s,
                    reconnect_grace_s=self.reconnect_grace_s,
                    timeout_s=self.timeout_s,
                ),
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

    def _check_outputs(
        self, client: ComfyUIClient, workflow: Workflow, submitted: Submitted
    ) -> None:
        """A prompt queued with some outputs dropped (their nodes failed validation): fine
        while the image's output node runs, else canceled and refused with the details."""
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

    def _adopt(
        self, client: ComfyUIClient, context: GenerationContext
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

    # -- check -------------------------------------------------------------------------------

    def check(self) -> BackendCheck:
        """Each server: ``/system_stats`` (reachable, version, VRAM), then the workflow
        against its ``/object_info`` (node classes, required inputs, model files). With
        several servers the detail names each one with its state; the backend is reachable
        and has the model when at least one server is and has it."""
        try:
            workflow = self.load()
        except ConfigError as error:
            return BackendCheck(
                reachable=None, credentials=None, model_present=None, detail=str(error)
            )
        log = logging.getLogger("imagen.comfyui")
        results = [
            (server, self._check_server(server, workflow, log)) for server in self._servers(log)
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

    def _check_server(self, server: Server, workflow: Workflow, log: Any) -> BackendCheck:
        with ComfyUIClient(server.url, self.request_timeout_s, log) as client:
            try:
                stats = client.system_stats()
            except BackendError as error:
                return BackendCheck(
                    reachable=False, credentials=None, model_present=None, detail=str(error)
                )
            summary = describe_system(stats)
            try:
                problems = workflow_problems(workflow.graph, client.object_info)
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
        return BackendCheck(
            reachable=True,
            credentials=None,
            model_present=True,
            detail=f"{summary}; workflow {workflow.name} valid on the server"
            + (f", model {model} present" if model else " (it needs no model file)"),
        )


def _target(key: str) -> Target | None:
    """``"17.scheduler"`` as a workflow input, or None for any other option key."""
    try:
        return parse_target(key)
    except ValueError:
        return None


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

"""The ComfyUI backend: FLUX (or any workflow) on the user's own GPU box behind ComfyUI.

One generation loads the workflow, writes the request into the mapped inputs, checks the
server has the model files, takes a queue slot (``pool_limit``), submits with a prompt id
derived from the run, follows it on the websocket (``/history`` when the socket drops),
and downloads the saved image. A workflow that maps ``image`` (a LoadImage node) takes one
source image: uploaded with ``POST /upload/image`` under its sha256 before the prompt is
queued, its name set in the node. docs/backends.md has the config block, the templates, the
mapping and the error table.

The HTTP and websocket clients are imported when a method first talks to a server, so
loading a config with this adapter (or running another backend) does not import them.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from imagen_pipeline.backends.comfyui.servers import (
    Server,
    ServerConfig,
    normalized_url,
)
from imagen_pipeline.backends.comfyui.slots import QueueSlots, default_state_dir
from imagen_pipeline.backends.comfyui.sources import source_support, uploads_for
from imagen_pipeline.backends.comfyui.workflow import (
    Problem,
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
from imagen_pipeline.backends.sources import SourceSupport
from imagen_pipeline.errors import ConfigError, InvalidRequestError

if TYPE_CHECKING:
    from imagen_pipeline.backends.comfyui.dispatch import DispatchSettings

MAX_GUIDANCE = 100
"""Largest guidance ComfyUI's FluxGuidance node takes."""
CLIENT_GUIDANCE = OptionRule(min=1, max=10)
"""What a web client may send as ``guidance`` when ``client_options`` is unset (FLUX's
useful range; it changes neither the GPU time nor the image count)."""


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
        description="Built-in template (flux-dev, flux-schnell, flux-fp8, flux-dev-img2img) or "
        "the absolute path of an API-format workflow JSON ('Export (API)' in ComfyUI).",
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Request field -> '<node id>.<input name>' (or a list of them): prompt, "
        "negative, seed, width, height, steps, guidance, strength, image (a LoadImage node's "
        "image: the source image), filename_prefix. Templates bring "
        "their own; entries here extend or replace them, null (or []) unmaps one.",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="'<node id>.<input name>' -> fixed value set on every prompt (e.g. a "
        "different model file or scheduler); never an input a request field is mapped to, "
        "the output name or a batch size (unmap the field first to fix its value).",
    )
    guidance: float | None = Field(
        default=None,
        ge=0,
        le=MAX_GUIDANCE,
        description="FLUX guidance; empty: the workflow's value.",
    )
    fallback_after_s: float = Field(
        default=60.0,
        gt=0,
        description="With a fallback: how long to wait for a free queue slot before using it.",
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

    @field_validator("inputs")
    @classmethod
    def _unmapped_as_empty(cls, value: dict[str, Any]) -> dict[str, Any]:
        """``null`` and ``[]`` both unmap a field; the settings hold ``[]`` (a mapping
        without nulls, as Dagster's config system needs it)."""
        return {field: [] if target is None else target for field, target in value.items()}

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
        """The workflow loads with its mapping and overrides, and no override sets what a
        request field sets (the same rule as for an option, :func:`_reserved_target`)."""
        try:
            workflow = load_workflow(self.workflow, self.inputs, self.overrides)
            reserved = [
                Problem(("overrides", str(key)), reason, value)
                for key, value in self.overrides.items()
                if (reason := _reserved_target(workflow, parse_target(key))) is not None
            ]
            if reserved:
                raise WorkflowError(reserved)
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

    def source_support(self) -> SourceSupport:
        """One source image when the workflow maps ``image`` (img2img when it maps
        ``strength``, else edit); none otherwise."""
        return source_support(self._option_workflow)

    def check_sources(self, name: str, request: GenerationRequest) -> None:
        """What any backend checks, and: a workflow that maps ``image`` needs one."""
        super().check_sources(name, request)
        if self._option_workflow.source_targets() and not (request.source_count or request.sources):
            raise InvalidRequestError(
                "source_images",
                f"is empty; backend {name!r} runs ComfyUI workflow {self.workflow}, which "
                "starts from an image (a LoadImage node mapped as image): name one",
            )

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
        return _reserved_target(self._option_workflow, target)

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
        self.check_sources(context.instance_name or "comfyui", request)
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
        if request.strength is not None:
            values["strength"] = request.strength
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
        from imagen_pipeline.backends.comfyui.dispatch import dispatch

        made = dispatch(
            self._servers(log),
            workflow,
            graph,
            context,
            deadline,
            self._dispatch_settings(),
            uploads_for(workflow, request),
        )
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
                    **({"uploaded": made.uploaded} if made.uploaded else {}),
                },
            ),
        )

    def _dispatch_settings(self) -> DispatchSettings:
        from imagen_pipeline.backends.comfyui.dispatch import DispatchSettings
        from imagen_pipeline.backends.comfyui.watch import WatchSettings

        return DispatchSettings(
            request_timeout_s=self.request_timeout_s,
            fallback_after_s=self.fallback_after_s if self.fallback else None,
            watch=WatchSettings(
                poll_interval_s=self.poll_interval_s,
                check_interval_s=self.check_interval_s,
                reconnect_grace_s=self.reconnect_grace_s,
                timeout_s=self.timeout_s,
            ),
        )

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

    # -- check -------------------------------------------------------------------------------

    def check(self) -> BackendCheck:
        """Each server's state and the workflow checked on it (:mod:`.health`)."""
        try:
            workflow = self.load()
        except ConfigError as error:
            return BackendCheck(
                reachable=None, credentials=None, model_present=None, detail=str(error)
            )
        log = logging.getLogger("imagen.comfyui")
        from imagen_pipeline.backends.comfyui.health import check_servers

        return check_servers(self._servers(log), workflow, self.request_timeout_s, log)


def _reserved_target(workflow: Workflow, target: Target) -> str | None:
    """Why nothing but a request field (or the pipeline) may set ``target``: it is mapped
    to a request field, or it sets how many images one prompt makes; None otherwise. Used
    for a request's options and for the block's ``overrides``."""
    field = workflow.field_at(target)
    if field == "guidance":
        return (
            "sets guidance, which only the guidance option or the instance's guidance "
            "setting may set"
        )
    if field == "filename_prefix":
        return "sets the output file name, which only the pipeline sets"
    if field == "image":
        return set_by_field("source_images", "the source image")
    if field is not None:
        return set_by_field(field)
    if workflow.sets_count(target):
        return set_by_field("count", "how many images one prompt makes")
    return None


def _target(key: str) -> Target | None:
    """``"17.scheduler"`` as a workflow input, or None for any other option key."""
    try:
        return parse_target(key)
    except ValueError:
        return None

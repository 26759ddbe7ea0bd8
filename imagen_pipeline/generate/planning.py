"""From what a user asks for (:class:`ImageSpec`) to the one plan a run follows.

The same validation serves the CLI, the Dagster launchpad and rows of ``imagen.jobs``, so a
bad field is rejected with the same message wherever it comes from. :func:`plan_generation`
reads everything a run needs from ``imagen.yaml`` once (the backend's settings, output,
cloud, budget and alerts settings, the owner); every later step of the run works from the
plan, so an edit of ``imagen.yaml`` during a run applies to the next run.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagen_pipeline.backends.contract import MAX_SEED, GenerationRequest
from imagen_pipeline.backends.registry import BackendInstance, build_backend
from imagen_pipeline.config.models import AlertsConfig, BudgetConfig, CloudConfig
from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline.generate.setup import Setup
from imagen_pipeline.generate.source_refs import check_source_fields
from imagen_pipeline.prompts.styles import apply_style, get_style

DEFAULT_SIZE = 1024
MIN_SIZE, MAX_SIZE = 64, 4096
MAX_STEPS = 200
MAX_PROMPT_CHARS = 8000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# backend_opts: the same rules as the database's imagen.valid_backend_opts() (migration
# 20261202090000_imagen_jobs_client_rules.sql; imagen_pipeline_tests/db/test_job_rules.py
# checks that both agree). Keys starting with "_" are refused everywhere: Dagster's
# serializer reads keys such as "__class__" in run config as structure.
MAX_OPTS_BYTES = 16384
MAX_OPTS_DEPTH = 4
MAX_OPTS_NUMBER = 2**53 - 1
_OPTION_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SIZE = re.compile(r"^\s*(\d+)\s*[xX\u00d7]\s*(\d+)\s*$")


MAX_COUNT = 8
"""Most images (variations) one request may ask for (``imagen.jobs.count``)."""
MIN_PRIORITY, MAX_PRIORITY = -100, 100
"""Range of ``imagen.jobs.priority`` (jobs_priority_check); clients may set 0 to 10."""


class RequestFields(BaseModel):
    """The request's fields that every entry point shares under the same names: the CLI,
    the run config and the ``imagen.jobs`` columns (which hold ``backend_opts`` as jsonb)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    negative: str = ""
    style: str = "none"
    backend: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    seed: int | None = None
    count: int = 1

    def request_fields(self) -> dict[str, Any]:
        """These fields and their values."""
        return {name: getattr(self, name) for name in RequestFields.model_fields}


class ImageSpec(RequestFields):
    """One image as a user asks for it, before enrichment and defaults: the one request
    schema (the run config and the job row are checked against it,
    ``imagen_pipeline_tests/defs/test_run_config.py``)."""

    backend_opts: dict[str, Any] = Field(default_factory=dict)
    source_images: list[str] = Field(default_factory=list)
    """Images to start from, in order: ``imagen.images`` ids, or (the operator's requests
    only) absolute paths of local files."""
    mask: str | None = None
    """A mask for the edit, named like a source image."""
    mode: str | None = None
    """``edit`` or ``img2img``; None: the backend's default."""
    strength: float | None = None
    """For ``img2img``: 0 to 1."""
    job_id: int | None = None
    job_attempt: int | None = None
    """The row's claim number (``imagen.jobs.claims``), which the run's tags carry."""
    owner_user_id: str | None = None
    priority: int = 0

    @property
    def from_client(self) -> bool:
        """True for a request from a row of ``imagen.jobs`` (a web client): its
        ``backend_opts`` are held to the backend's ``client_options``. Every other source
        (imagen.yaml, ``imagen generate``, the launchpad, ``dagster job execute``) is the
        operator's. Known from the job id the sensor puts in the run, never from a column."""
        return self.job_id is not None


class OutputPlan(BaseModel):
    """Where the run writes its image: ``output`` of imagen.yaml, the folder made absolute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: str
    naming: str
    write_metadata_json: bool

    @property
    def path(self) -> Path:
        """The output folder."""
        return Path(self.directory)


class FallbackPlan(BaseModel):
    """A ``fallback`` instance as the run saw it: name, type, validated settings, model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str
    backend_type: str
    backend_settings: dict[str, Any]
    model: str


class GenerationPlan(BaseModel):
    """The one plan of a run: the validated request, the enriched request a backend gets, and
    a snapshot of every setting of ``imagen.yaml`` the later steps need."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: ImageSpec
    backend: str
    backend_type: str
    backend_settings: dict[str, Any]
    """The backend's block of imagen.yaml as validated (env var names, never secrets)."""
    model: str
    pool: str
    request: GenerationRequest
    output: OutputPlan
    cloud: CloudConfig | None
    budget: BudgetConfig
    alerts: AlertsConfig | None = None
    """The ``alerts:`` block: who to tell of a fallback taken or the budget used up."""
    owner_user_id: str | None
    """The job's owner, else ``cloud.owner_user_id``, else nobody."""
    config_source: str
    planned_at: datetime
    fallbacks: list[FallbackPlan] = Field(default_factory=list)
    """The backend's ``fallback`` instances, in order, snapshotted like the backend."""
    fell_back_from: str | None = None
    """On a plan made by :meth:`falling_back`: the instance that could not take the job."""
    fallback_reason: str | None = None
    """Why: ``fell back from gpu: 2 servers unreachable``."""
    variation: int = 0
    """Which of the request's ``count`` images this plan makes (see :meth:`for_variation`)."""

    def backend_instance(self) -> BackendInstance:
        """The adapter, built from the snapshot (not from imagen.yaml as it is now)."""
        return build_backend(self.backend, {"type": self.backend_type, **self.backend_settings})

    @property
    def variations(self) -> list[GenerationPlan]:
        """One plan per image the request asks for (``count``), variation 0 first."""
        return [self.for_variation(number) for number in range(self.spec.count)]

    def for_variation(self, number: int) -> GenerationPlan:
        """This plan for image ``number`` of the request: a given seed ``s`` becomes
        ``s + number`` (wrapping within the seed range), so each image has its own seed; with
        no seed the backend derives one per run and variation."""
        seed = self.spec.seed
        if seed is not None:
            seed = (seed + number) % (MAX_SEED + 1)
        request = self.request.model_copy(update={"seed": seed})
        return self.model_copy(update={"variation": number, "request": request})

    def falling_back(self, to: FallbackPlan, summary: str) -> GenerationPlan:
        """This plan bound to the fallback ``to`` instead, with why. The request keeps the
        options ``to`` takes from this requester; the others are left out and named in the
        reason."""
        fallback = build_backend(to.backend, {"type": to.backend_type, **to.backend_settings})
        kept, dropped = fallback.backend.accepted_options(
            self.request.backend_opts, from_client=self.spec.from_client
        )
        reason = f"fell back from {self.backend}: {summary}"
        if dropped:
            reason += f"; options {to.backend} does not take were left out: {', '.join(dropped)}"
        return self.model_copy(
            update={
                "backend": to.backend,
                "backend_type": to.backend_type,
                "backend_settings": to.backend_settings,
                "model": to.model,
                "request": self.request.model_copy(update={"backend_opts": kept}),
                "fallbacks": [],
                "fell_back_from": self.backend,
                "fallback_reason": reason,
            }
        )


def parse_size(value: str) -> tuple[int, int]:
    """``"1024x768"`` -> ``(1024, 768)``; an error names the expected form."""
    match = _SIZE.match(value)
    if not match:
        raise InvalidRequestError(
            "size", f"expected WIDTHxHEIGHT such as 1024x1024 (got {value!r})"
        )
    return int(match.group(1)), int(match.group(2))


def _check_text(field: str, value: str, *, required: bool) -> None:
    if required and not value.strip():
        raise InvalidRequestError(field, "must not be empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(field, f"must be at most {MAX_PROMPT_CHARS} characters")
    if _CONTROL.search(value):
        raise InvalidRequestError(field, "must not contain control characters (tab, newline ok)")


def _check_range(field: str, value: int | None, low: int, high: int, multiple: int = 1) -> None:
    if value is None:
        return
    if not low <= value <= high or value % multiple:
        step = f" and a multiple of {multiple}" if multiple > 1 else ""
        raise InvalidRequestError(field, f"must be between {low} and {high}{step} (got {value})")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _opts_problem(value: object, path: str, level: int) -> str | None:
    """Why ``value`` (at ``path``, nested ``level`` deep) breaks the backend_opts rules."""
    if level > MAX_OPTS_DEPTH:
        return f"{path}: nested more than {MAX_OPTS_DEPTH} levels deep"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not _OPTION_KEY.fullmatch(key):
                return (
                    f"{path}: key {key!r} is not allowed; keys are 1-100 letters, digits, "
                    "'_', '.', ':' or '-' and do not start with '_'"
                )
            problem = _opts_problem(item, f"{path}.{key}", level + 1)
            if problem:
                return problem
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _opts_problem(item, f"{path}[{index}]", level + 1)
            if problem:
                return problem
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > MAX_OPTS_NUMBER:
            return f"{path}: numbers must be between -{MAX_OPTS_NUMBER} and {MAX_OPTS_NUMBER}"
    elif isinstance(value, str):
        if "\x00" in value or _SURROGATE.search(value):
            return f"{path}: text must not contain U+0000 or unpaired surrogates"
    elif value is not None and not isinstance(value, bool):
        return f"{path}: {type(value).__name__} is not a JSON value"
    return None


def check_backend_opts(value: object) -> None:
    """Raise :class:`InvalidRequestError` unless ``value`` is a JSON object within the rules
    the database also applies (size, nesting, key names, number range)."""
    if not isinstance(value, dict):
        raise InvalidRequestError(
            "backend_opts", f"must be a JSON object (got {_json_type(value)})"
        )
    problem = _opts_problem(value, "backend_opts", 0)
    if problem:
        field, _, message = problem.partition(": ")
        raise InvalidRequestError(field, message)
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_OPTS_BYTES:
        raise InvalidRequestError(
            "backend_opts", f"must be at most {MAX_OPTS_BYTES} bytes as JSON (got {size})"
        )


def parse_backend_opts(text: str) -> dict[str, Any]:
    """``backend_opts`` given as JSON text (a row's column, run config) as a checked mapping."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidRequestError("backend_opts", f"is not usable JSON ({error})") from None
    check_backend_opts(value)
    return value


def validate_spec(spec: ImageSpec, config: Setup) -> None:
    """Raise :class:`InvalidRequestError` for the first field outside its allowed values."""
    _check_text("prompt", spec.prompt, required=True)
    _check_text("negative", spec.negative, required=False)
    get_style(spec.style)
    backend = spec.backend or config.config.default_backend
    configured = config.backends
    if backend not in configured:
        raise InvalidRequestError(
            "backend",
            f"{backend!r} is not a backend this server offers; leave it empty for the default",
            detail=f"{config.source_label}; configured backends: {', '.join(configured.names())}",
        )
    _check_range("width", spec.width, MIN_SIZE, MAX_SIZE, multiple=8)
    _check_range("height", spec.height, MIN_SIZE, MAX_SIZE, multiple=8)
    _check_range("steps", spec.steps, 1, MAX_STEPS)
    _check_range("seed", spec.seed, 0, MAX_SEED)
    _check_range("count", spec.count, 1, MAX_COUNT)
    _check_range("priority", spec.priority, MIN_PRIORITY, MAX_PRIORITY)
    check_backend_opts(spec.backend_opts)
    check_source_fields(
        spec.source_images, spec.mask, spec.mode, spec.strength, from_client=spec.from_client
    )


def plan_generation(spec: ImageSpec, config: Setup) -> GenerationPlan:
    """Validate ``spec``, apply its style preset and defaults, and bind it to a backend whose
    option rules allow its ``backend_opts`` and source fields (a client's: its
    ``client_options``) and that takes its source images."""
    validate_spec(spec, config)
    preset = get_style(spec.style)
    instance = config.backend(spec.backend or config.config.default_backend)
    instance.backend.check_options(spec.backend_opts, from_client=spec.from_client)
    instance.backend.check_source_fields(
        spec.mode,  # type: ignore[arg-type]
        spec.strength,
        spec.mask is not None,
        from_client=spec.from_client,
    )
    prompt, negative = apply_style(preset, spec.prompt, spec.negative)
    request = GenerationRequest(
        prompt=prompt,
        negative=negative,
        width=spec.width or preset.width or DEFAULT_SIZE,
        height=spec.height or preset.height or DEFAULT_SIZE,
        steps=spec.steps or preset.steps,
        seed=spec.seed,
        style=preset.name,
        backend_opts=dict(spec.backend_opts),
        mode=spec.mode,
        strength=spec.strength,
        source_count=len(spec.source_images),
        has_mask=spec.mask is not None,
    )
    instance.backend.check_sources(instance.name, request)
    settings = config.config
    cloud = settings.cloud
    return GenerationPlan(
        spec=spec,
        backend=instance.name,
        backend_type=instance.type_name,
        backend_settings=instance.backend.model_dump(),
        model=instance.backend.model_name(),
        pool=instance.backend.pool,
        request=request,
        output=OutputPlan(
            directory=str(config.output_dir),
            naming=settings.output.naming,
            write_metadata_json=settings.output.write_metadata_json,
        ),
        cloud=cloud,
        budget=settings.budget,
        alerts=settings.alerts,
        owner_user_id=spec.owner_user_id or (cloud.owner_user_id if cloud else None),
        config_source=config.source_label,
        planned_at=datetime.now(UTC),
        fallbacks=[
            FallbackPlan(
                backend=other.name,
                backend_type=other.type_name,
                backend_settings=other.backend.model_dump(),
                model=other.backend.model_name(),
            )
            for other in (config.backend(name) for name in instance.backend.fallback)
        ],
    )

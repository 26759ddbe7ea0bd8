"""From what a user asks for (:class:`ImageSpec`) to what a backend receives.

The same validation serves the CLI, the Dagster launchpad and rows of ``imagen.jobs``, so a
bad field is rejected with the same message wherever it comes from.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imagen_pipeline.backends.contract import MAX_SEED, GenerationRequest
from imagen_pipeline.config.loader import LoadedConfig
from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline.prompts.styles import apply_style, get_style

DEFAULT_SIZE = 1024
MIN_SIZE, MAX_SIZE = 64, 4096
MAX_STEPS = 200
MAX_PROMPT_CHARS = 8000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SIZE = re.compile(r"^\s*(\d+)\s*[xX\u00d7]\s*(\d+)\s*$")


class ImageSpec(BaseModel):
    """One image as a user asks for it, before enrichment and defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    negative: str = ""
    style: str = "none"
    backend: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    seed: int | None = None
    backend_opts: dict[str, Any] = Field(default_factory=dict)
    job_id: int | None = None
    owner_user_id: str | None = None


class GenerationPlan(BaseModel):
    """A validated spec bound to a backend instance, with the enriched request to send."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: ImageSpec
    backend: str
    backend_type: str
    model: str
    pool: str
    request: GenerationRequest
    planned_at: datetime


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


def validate_spec(spec: ImageSpec, config: LoadedConfig) -> None:
    """Raise :class:`InvalidRequestError` for the first field outside its allowed values."""
    _check_text("prompt", spec.prompt, required=True)
    _check_text("negative", spec.negative, required=False)
    get_style(spec.style)
    backend = spec.backend or config.config.default_backend
    if backend not in config.backends:
        raise InvalidRequestError(
            "backend",
            f"{backend!r} is not configured in {config.source_label}; "
            f"configured backends: {', '.join(sorted(config.backends))}",
        )
    _check_range("width", spec.width, MIN_SIZE, MAX_SIZE, multiple=8)
    _check_range("height", spec.height, MIN_SIZE, MAX_SIZE, multiple=8)
    _check_range("steps", spec.steps, 1, MAX_STEPS)
    _check_range("seed", spec.seed, 0, MAX_SEED)


def plan_generation(spec: ImageSpec, config: LoadedConfig) -> GenerationPlan:
    """Validate ``spec``, apply its style preset and defaults, and bind it to a backend."""
    validate_spec(spec, config)
    preset = get_style(spec.style)
    instance = config.backend(spec.backend or config.config.default_backend)
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
    )
    return GenerationPlan(
        spec=spec,
        backend=instance.name,
        backend_type=instance.type_name,
        model=instance.backend.model_name(),
        pool=instance.backend.pool,
        request=request,
        planned_at=datetime.now(UTC),
    )

"""Calling a backend for a plan and staging the image on disk.

The staged file lives in ``<output dir>/.imagen-staging/`` (same filesystem as the final
image, so moving it is cheap; the folder is removed once nothing is left in it) and is what
the Dagster op hands to the next step: a path, never image bytes, so "re-execute from
failure" reuses it without calling the backend. A queued job's generations are recorded
beside it (:mod:`imagen_pipeline.generate.job_records`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from imagen_pipeline.atomic_files import write_atomic
from imagen_pipeline.backends.contract import GenerationContext, GenerationMetadata, ImageFacts
from imagen_pipeline.backends.registry import BackendInstance
from imagen_pipeline.errors import PermanentBackendError
from imagen_pipeline.generate.planning import GenerationPlan

STAGING_DIRNAME = ".imagen-staging"
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class GeneratedImage(BaseModel):
    """An image a backend produced, staged on disk, with everything known about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: GenerationPlan
    staged_path: str
    mime_type: str
    extension: str
    width: int
    height: int
    bytes: int
    sha256: str
    metadata: GenerationMetadata
    run_id: str
    attempt: int
    generated_at: datetime


def staging_dir(output_dir: Path) -> Path:
    """Folder for staged images inside ``output_dir``."""
    return output_dir / STAGING_DIRNAME


def variation_suffix(variation: int) -> str:
    """``-v<n>`` for variation n > 0; nothing for the first (or only) image, whose names
    stay those of a request for one image."""
    return f"-v{variation}" if variation else ""


def supported_format(facts: ImageFacts) -> str:
    """The image's format if the pipeline stores it, else a permanent error."""
    if facts.format not in EXTENSIONS:
        raise PermanentBackendError(
            f"backend returned a {facts.format or 'unknown'} image; supported formats: "
            + ", ".join(sorted(EXTENSIONS))
        )
    return facts.format


def run_generation(
    plan: GenerationPlan,
    instance: BackendInstance,
    context: GenerationContext,
    output_dir: Path,
) -> GeneratedImage:
    """Check credentials, call the backend and stage the image atomically.

    The adapter verified the bytes (:func:`~imagen_pipeline.backends.contract.verify_image`)
    and says what they are; they are not decoded again here.
    """
    instance.require_credentials()
    result = instance.backend.generate(plan.request, context)
    fmt = supported_format(result.facts)
    width, height = result.facts.width, result.facts.height
    if (width, height) != (plan.request.width, plan.request.height):
        context.log.warning(
            f"backend {plan.backend!r} returned {width}x{height}, "
            f"requested {plan.request.width}x{plan.request.height}"
        )
    suffix = variation_suffix(plan.variation)
    staged = staging_dir(output_dir) / f"{context.run_id}{suffix}{EXTENSIONS[fmt]}"
    write_atomic(staged, result.image)
    generated = GeneratedImage(
        plan=plan,
        staged_path=str(staged),
        mime_type=MIME_TYPES[fmt],
        extension=EXTENSIONS[fmt],
        width=width,
        height=height,
        bytes=len(result.image),
        sha256=hashlib.sha256(result.image).hexdigest(),
        metadata=result.metadata,
        run_id=context.run_id,
        attempt=context.attempt,
        generated_at=datetime.now(UTC),
    )
    return generated

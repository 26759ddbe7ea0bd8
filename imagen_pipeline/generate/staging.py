"""Calling a backend for a plan and staging the image on disk.

The staged file lives in ``<output dir>/.imagen-staging/`` (same filesystem as the final
image, so moving it is cheap; the folder is removed once nothing is left in it) and is what
the Dagster op hands to the next step: a path, never image bytes, so "re-execute from
failure" reuses it without calling the backend.

For a run of an ``imagen.jobs`` row, ``job-<id>.json`` (``job-<id>-v<n>.json`` for
variation n > 0) beside it records each generation until the job is done, so a later run
of the same job (a retried job, a row requeued after a lost run) re-uses the images it
finds instead of calling the backend again and makes only the missing ones
(:func:`imagen_pipeline.output.store.find_job_generation`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from imagen_pipeline.atomic_files import remove_if_empty, write_atomic
from imagen_pipeline.backends.contract import GenerationContext, GenerationMetadata, ImageFacts
from imagen_pipeline.backends.registry import BackendInstance
from imagen_pipeline.errors import PermanentBackendError
from imagen_pipeline.generate.plan import GenerationPlan

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


def job_record_path(output_dir: Path, job_id: int, variation: int = 0) -> Path:
    """Where the generation of image ``variation`` of job ``job_id`` is recorded until the
    job is done."""
    return staging_dir(output_dir) / f"job-{job_id}{variation_suffix(variation)}.json"


def discard_job_record(generated: GeneratedImage) -> None:
    """Forget the generation of a job that is done."""
    if generated.plan.spec.job_id is not None:
        output_dir = Path(generated.staged_path).parent.parent
        path = job_record_path(output_dir, generated.plan.spec.job_id, generated.plan.variation)
        path.unlink(missing_ok=True)
        remove_if_empty(path.parent)


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
    if plan.spec.job_id is not None:
        write_atomic(
            job_record_path(output_dir, plan.spec.job_id, plan.variation),
            generated.model_dump_json().encode(),
        )
    return generated

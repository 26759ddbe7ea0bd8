"""What a queued job has generated so far, so a later run of the same job re-uses it.

For a run of an ``imagen.jobs`` row, ``job-<id>.json`` (``job-<id>-v<n>.json`` for
variation n > 0) in the staging folder records each generation until the job is done: the
staged image and, once the write step stored it, its final file. A later run of the same
job (a retried job, a row requeued after a lost run) re-uses the images it finds instead of
calling the backend again and makes only the missing ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from imagen_pipeline.atomic_files import remove_if_empty, sha256_file, write_atomic
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.staging import GeneratedImage, staging_dir, variation_suffix


class JobRecord(BaseModel):
    """One generation of a job: the image as staged and, once stored, its final file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generated: GeneratedImage
    stored_path: str | None = None
    stored_sha256: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_generation(cls, value: Any) -> Any:
        """A record written before stored files were recorded is the bare generation."""
        if isinstance(value, dict) and "generated" not in value:
            return {"generated": value}
        return value


def job_record_path(output_dir: Path, job_id: int, variation: int = 0) -> Path:
    """Where the generation of image ``variation`` of job ``job_id`` is recorded until the
    job is done."""
    return staging_dir(output_dir) / f"job-{job_id}{variation_suffix(variation)}.json"


def _path_of(generated: GeneratedImage) -> Path | None:
    job_id = generated.plan.spec.job_id
    if job_id is None:
        return None
    output_dir = Path(generated.staged_path).parent.parent
    return job_record_path(output_dir, job_id, generated.plan.variation)


def record_generation(generated: GeneratedImage) -> None:
    """Record a job's new generation (a run without a job records nothing)."""
    path = _path_of(generated)
    if path is not None:
        write_atomic(path, JobRecord(generated=generated).model_dump_json().encode())


def record_stored(generated: GeneratedImage, image_path: Path, sha256: str) -> None:
    """Record where a job's generation was stored under its final name."""
    path = _path_of(generated)
    if path is not None:
        record = JobRecord(generated=generated, stored_path=str(image_path), stored_sha256=sha256)
        write_atomic(path, record.model_dump_json().encode())


def discard_job_record(generated: GeneratedImage) -> None:
    """Forget the generation of a job that is done."""
    path = _path_of(generated)
    if path is not None:
        path.unlink(missing_ok=True)
        remove_if_empty(path.parent)


def find_job_generation(plan: GenerationPlan) -> GeneratedImage | None:
    """The image an earlier run of the same ``imagen.jobs`` row generated for the same
    request and backend (or its fallback), if it is still on disk: staged, or stored under
    its final name."""
    if plan.spec.job_id is None:
        return None
    path = job_record_path(plan.output.path, plan.spec.job_id, plan.variation)
    try:
        record = JobRecord.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None
    previous = record.generated
    made_for = previous.plan.fell_back_from or previous.plan.backend
    if (
        made_for != plan.backend
        or previous.plan.request != plan.request
        or previous.plan.variation != plan.variation
    ):
        return None
    for image, digest in (
        (previous.staged_path, previous.sha256),
        (record.stored_path, record.stored_sha256),
    ):
        if image and digest and Path(image).is_file() and sha256_file(Path(image)) == digest:
            return previous
    return None

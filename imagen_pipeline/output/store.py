"""Moving a staged image to its final, unique name with its sidecar and PNG text chunks.

Idempotent: if an earlier attempt already wrote this generation (same generating run and
source hash) under one of the candidate names, that file is reused instead of writing a
second image. A queued job's record learns where its image was stored
(:func:`~imagen_pipeline.generate.job_records.record_stored`), so a later run of the job
re-uses it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, ConfigDict

from imagen_pipeline.atomic_files import remove_if_empty, sha256_file, write_atomic
from imagen_pipeline.errors import OutputError
from imagen_pipeline.generate.job_records import record_stored
from imagen_pipeline.generate.staging import GeneratedImage
from imagen_pipeline.naming.file_names import render_name, resolve_inside, slug_for
from imagen_pipeline.output.png_text import add_text_chunks, is_png
from imagen_pipeline.output.sidecar import (
    build_sidecar,
    png_text_entries,
    sidecar_bytes,
    sidecar_path_for,
)

MAX_NAME_ATTEMPTS = 10_000


class StoredImage(BaseModel):
    """An image at its final path, with its sidecar (if enabled)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generated: GeneratedImage
    image_path: str
    sidecar_path: str | None
    sha256: str
    bytes: int
    written_at: datetime


def naming_fields(generated: GeneratedImage) -> dict[str, object]:
    """Values for the ``output.naming`` template."""
    local = generated.generated_at.astimezone()
    plan = generated.plan
    return {
        "date": local.strftime("%Y-%m-%d"),
        "time": local.strftime("%H%M%S"),
        "datetime": local.strftime("%Y%m%d-%H%M%S"),
        "slug": slug_for(plan.spec.prompt),
        "seed": "noseed" if generated.metadata.seed is None else generated.metadata.seed,
        "backend": plan.backend,
        "model": generated.metadata.model,
        "style": plan.request.style,
        "run_id": generated.run_id[:8],
        "job_id": "nojob" if plan.spec.job_id is None else plan.spec.job_id,
        "width": generated.width,
        "height": generated.height,
        "variation": plan.variation,
    }


def _written_by(image_path: Path, generated: GeneratedImage) -> bool:
    """True if ``image_path`` holds this very generation (from an earlier attempt)."""
    sidecar = sidecar_path_for(image_path)
    if sidecar.is_file():
        try:
            facts = json.loads(sidecar.read_text(encoding="utf-8")).get("generation", {})
        except (OSError, ValueError):
            facts = {}
        if facts.get("source_sha256") == generated.sha256:
            return facts.get("run_id") == generated.run_id
    if image_path.suffix == ".png":
        try:
            with Image.open(image_path) as image:
                text = getattr(image, "text", {})
        except OSError:
            return False
        return (
            text.get("imagen.source_sha256") == generated.sha256
            and text.get("imagen.run_id") == generated.run_id
        )
    return False


def _final_bytes(generated: GeneratedImage) -> bytes:
    staged = Path(generated.staged_path)
    try:
        data = staged.read_bytes()
    except FileNotFoundError:
        raise OutputError(
            f"staged image {staged} no longer exists and no finished copy was found; "
            "re-execute the run from the generate step"
        ) from None
    if is_png(data):
        data = add_text_chunks(data, png_text_entries(generated))
    return data


def _candidates(base: Path, extension: str) -> Iterator[Path]:
    """The image names ``output.naming`` allows for one image, in the order they are tried."""
    for number in range(1, MAX_NAME_ATTEMPTS + 1):
        stem = base.name if number == 1 else f"{base.name}-{number}"
        yield base.parent / f"{stem}{extension}"
    raise OutputError(f"no free file name for {base} after {MAX_NAME_ATTEMPTS} tries")


def _base_path(generated: GeneratedImage, output_dir: Path, naming: str) -> Path:
    relative = render_name(naming, naming_fields(generated))
    try:
        return resolve_inside(output_dir, relative)
    except ValueError as error:
        raise OutputError(f"cannot place {relative} in the output folder: {error}") from None


def store_image(
    generated: GeneratedImage,
    output_dir: Path,
    naming: str,
    write_sidecar: bool,
    run_id: str,
) -> StoredImage:
    """Write the staged image under a unique name from ``naming``, plus its sidecar."""
    base = _base_path(generated, output_dir, naming)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create output folder for {base}: {error}") from None
    written_at = datetime.now(UTC)
    data: bytes | None = None
    for image_path in _candidates(base, generated.extension):
        sidecar_path = sidecar_path_for(image_path)
        if image_path.exists():
            if _written_by(image_path, generated):
                break
            continue
        if sidecar_path.exists():
            continue
        if data is None:
            data = _final_bytes(generated)
        try:
            write_atomic(image_path, data, exclusive=True)
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(f"cannot write {image_path}: {error.strerror or error}") from None
        break
    digest = sha256_file(image_path) if data is None else hashlib.sha256(data).hexdigest()
    size = image_path.stat().st_size
    written_sidecar: Path | None = None
    if write_sidecar:
        sidecar = build_sidecar(generated, image_path, digest, size, run_id, written_at)
        try:
            write_atomic(sidecar_path, sidecar_bytes(sidecar))
        except OSError as error:
            raise OutputError(f"cannot write {sidecar_path}: {error.strerror or error}") from None
        written_sidecar = sidecar_path
    record_stored(generated, image_path, digest)
    staged = Path(generated.staged_path)
    staged.unlink(missing_ok=True)
    remove_if_empty(staged.parent)
    return StoredImage(
        generated=generated,
        image_path=str(image_path),
        sidecar_path=str(written_sidecar) if written_sidecar else None,
        sha256=digest,
        bytes=size,
        written_at=written_at,
    )

"""Calling a backend for a plan and staging the image on disk.

The staged file lives in ``<output dir>/.imagen-staging/`` (same filesystem as the final
image, so moving it is cheap) and is what the Dagster op hands to the next step: a path,
never image bytes, so "re-execute from failure" reuses it without calling the backend.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict

from imagen_pipeline.backends.contract import GenerationContext, GenerationMetadata
from imagen_pipeline.backends.registry import BackendInstance
from imagen_pipeline.errors import PermanentBackendError
from imagen_pipeline.output.files import write_atomic
from imagen_pipeline.planning import GenerationPlan

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


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """(Pillow format, width, height) of encoded image bytes; refuses non-images."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            fmt, (width, height) = image.format or "", image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise PermanentBackendError(
            f"backend returned data that is not an image: {error}"
        ) from None
    if fmt not in EXTENSIONS:
        raise PermanentBackendError(
            f"backend returned a {fmt or 'unknown'} image; supported formats: "
            + ", ".join(sorted(EXTENSIONS))
        )
    return fmt, width, height


def run_generation(
    plan: GenerationPlan,
    instance: BackendInstance,
    context: GenerationContext,
    output_dir: Path,
) -> GeneratedImage:
    """Check credentials, call the backend, verify the bytes and stage them atomically."""
    instance.require_credentials()
    result = instance.backend.generate(plan.request, context)
    fmt, width, height = inspect_image(result.image)
    if (width, height) != (plan.request.width, plan.request.height):
        context.log.warning(
            f"backend {plan.backend!r} returned {width}x{height}, "
            f"requested {plan.request.width}x{plan.request.height}"
        )
    staged = staging_dir(output_dir) / f"{context.run_id}{EXTENSIONS[fmt]}"
    write_atomic(staged, result.image)
    return GeneratedImage(
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

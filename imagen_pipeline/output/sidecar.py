"""The JSON sidecar written next to each image, and the PNG text chunks with its key facts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagen_pipeline import __version__

if TYPE_CHECKING:
    from imagen_pipeline.backends.sources import SourceImage
    from imagen_pipeline.generate.staging import GeneratedImage

SIDECAR_SCHEMA_VERSION = 1
SOFTWARE = f"imagen_pipeline {__version__}"


def sidecar_path_for(image_path: Path) -> Path:
    """``cat.png`` -> ``cat.json`` in the same folder."""
    return image_path.with_suffix(".json")


def build_sidecar(
    generated: GeneratedImage,
    image_path: Path,
    image_sha256: str,
    image_bytes: int,
    written_by_run_id: str,
    written_at: datetime,
) -> dict[str, Any]:
    """Everything needed to reproduce and trace the image (never a credential)."""
    plan = generated.plan
    request = plan.request
    return {
        "schema_version": SIDECAR_SCHEMA_VERSION,
        "software": SOFTWARE,
        "image": {
            "file": image_path.name,
            "path": str(image_path),
            "mime_type": generated.mime_type,
            "width": generated.width,
            "height": generated.height,
            "bytes": image_bytes,
            "sha256": image_sha256,
        },
        "request": plan.spec.model_dump(mode="json"),
        "enriched": {
            "prompt": request.prompt,
            "negative": request.negative,
            "style": request.style,
            "width": request.width,
            "height": request.height,
            "steps": request.steps,
            "seed": request.seed,
        },
        "sources": source_entries(generated),
        "backend": {
            "instance": plan.backend,
            "type": plan.backend_type,
            "options": request.backend_opts,
            **({"fallback": plan.fallback_reason} if plan.fell_back_from else {}),
        },
        "result": generated.metadata.model_dump(mode="json"),
        "generation": {
            "run_id": generated.run_id,
            "attempt": generated.attempt,
            "variation": plan.variation,
            "count": plan.spec.count,
            "source_sha256": generated.sha256,
        },
        "dagster": {"run_id": generated.run_id, "written_by_run_id": written_by_run_id},
        "job_id": plan.spec.job_id,
        "timestamps": {
            "planned_at": plan.planned_at.isoformat(),
            "generated_at": generated.generated_at.isoformat(),
            "written_at": written_at.isoformat(),
        },
    }


def source_entries(generated: GeneratedImage) -> dict[str, Any] | None:
    """The images this one was made from (its parents, with their sha256 and image ids),
    the mode and the strength; None for an image made from text only."""
    request = generated.plan.request
    if not request.sources:
        return None

    def entry(source: SourceImage) -> dict[str, Any]:
        return source.model_dump(mode="json", exclude={"path", "role"})

    return {
        "images": [entry(source) for source in request.sources],
        "mask": entry(request.mask) if request.mask else None,
        "mode": request.mode,
        "strength": request.strength,
    }


def sidecar_bytes(sidecar: dict[str, Any]) -> bytes:
    """Pretty UTF-8 JSON (Umlaute and other scripts kept as written)."""
    return (json.dumps(sidecar, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def png_text_entries(generated: GeneratedImage) -> dict[str, str]:
    """Key facts embedded as PNG ``iTXt`` chunks (keys prefixed ``imagen.``)."""
    plan = generated.plan
    meta = generated.metadata
    entries = {
        "Software": SOFTWARE,
        "imagen.prompt": plan.spec.prompt,
        "imagen.enriched_prompt": plan.request.prompt,
        "imagen.negative": plan.request.negative,
        "imagen.style": plan.request.style,
        "imagen.backend": plan.backend,
        "imagen.model": meta.model,
        "imagen.seed": "" if meta.seed is None else str(meta.seed),
        "imagen.steps": "" if meta.steps is None else str(meta.steps),
        "imagen.size": f"{generated.width}x{generated.height}",
        "imagen.run_id": generated.run_id,
        "imagen.source_sha256": generated.sha256,
    }
    if plan.spec.job_id is not None:
        entries["imagen.job_id"] = str(plan.spec.job_id)
    if plan.request.sources:
        entries["imagen.parents"] = " ".join(
            f"{source.image_id or '-'}:{source.sha256}" for source in plan.request.sources
        )
    return entries

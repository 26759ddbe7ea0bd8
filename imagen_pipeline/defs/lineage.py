"""Lineage of one image in Dagster: ``imagen/image`` materializations and their metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from imagen_pipeline.cloud.sync import StorageLocation
from imagen_pipeline.output.preview import preview_markdown
from imagen_pipeline.output.store import StoredImage

IMAGE_ASSET_KEY = dg.AssetKey(["imagen", "image"])


def image_materialization(stored: StoredImage) -> dg.AssetMaterialization:
    """Where the image is, what made it, and a small preview."""
    generated = stored.generated
    plan = generated.plan
    meta = generated.metadata
    metadata: dict[str, Any] = {
        "path": dg.MetadataValue.path(stored.image_path),
        "prompt": dg.MetadataValue.text(plan.spec.prompt),
        "enriched_prompt": dg.MetadataValue.text(plan.request.prompt),
        "style": dg.MetadataValue.text(plan.request.style),
        "backend": dg.MetadataValue.text(plan.backend),
        "backend_type": dg.MetadataValue.text(plan.backend_type),
        "backend_server": dg.MetadataValue.text(meta.server) if meta.server else None,
        "fallback": (dg.MetadataValue.text(plan.fallback_reason) if plan.fallback_reason else None),
        "model": dg.MetadataValue.text(meta.model),
        "seed": dg.MetadataValue.int(meta.seed) if meta.seed is not None else None,
        "size": dg.MetadataValue.text(f"{generated.width}x{generated.height}"),
        "steps": dg.MetadataValue.int(meta.steps) if meta.steps is not None else None,
        "latency_s": dg.MetadataValue.float(meta.latency_s),
        "cost_usd": dg.MetadataValue.float(meta.cost_usd) if meta.cost_usd is not None else None,
        "price_source": dg.MetadataValue.text(f"{meta.price_source}: {meta.price_note}"),
        "sha256": dg.MetadataValue.text(stored.sha256),
        "preview": dg.MetadataValue.md(_preview(stored.image_path)),
    }
    if stored.sidecar_path:
        metadata["sidecar_path"] = dg.MetadataValue.path(stored.sidecar_path)
    if plan.spec.job_id is not None:
        metadata["job_id"] = dg.MetadataValue.int(plan.spec.job_id)
    return dg.AssetMaterialization(
        asset_key=IMAGE_ASSET_KEY,
        description=plan.spec.prompt[:200],
        metadata={key: value for key, value in metadata.items() if value is not None},
    )


def uploaded_materialization(
    stored: StoredImage, location: StorageLocation
) -> dg.AssetMaterialization:
    """The same image once it is in Supabase Storage: its URL and object as well."""
    base = image_materialization(stored)
    return dg.AssetMaterialization(
        asset_key=IMAGE_ASSET_KEY,
        description=base.description,
        metadata={
            **base.metadata,
            "url": dg.MetadataValue.url(location.url),
            "storage_object": dg.MetadataValue.text(f"{location.bucket}/{location.path}"),
        },
    )


def _preview(path: str) -> str:
    """The preview markdown, or a note if the image cannot be thumbnailed."""
    try:
        return preview_markdown(Path(path))
    except OSError as error:
        return f"(no preview: {error})"

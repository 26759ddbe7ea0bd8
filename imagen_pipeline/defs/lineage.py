"""Lineage of one image in Dagster: the materializations of the assets in
:mod:`imagen_pipeline.defs.assets` and their metadata."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from imagen_pipeline.cloud.sync import StorageLocation
from imagen_pipeline.defs.assets import IMAGE, IMAGES_TABLE, STORAGE_OBJECT, USAGE_TABLE
from imagen_pipeline.output.preview import preview_markdown
from imagen_pipeline.output.store import StoredImage
from imagen_pipeline.usage.recorder import generation_key


def image_materialization(
    stored: StoredImage, parent_events: Mapping[str, int] | None = None
) -> dg.AssetMaterialization:
    """Where the image is, what made it, a small preview, and its parents (``parent_events``:
    :func:`parent_materialization_times`)."""
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
        "backend_options": (
            dg.MetadataValue.json(plan.request.backend_opts) if plan.request.backend_opts else None
        ),
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
    metadata.update(parent_metadata(stored, parent_events or {}))
    metadata.update(_job(stored))
    return dg.AssetMaterialization(
        asset_key=IMAGE,
        description=plan.spec.prompt[:200],
        metadata={key: value for key, value in metadata.items() if value is not None},
    )


def storage_materialization(
    stored: StoredImage, location: StorageLocation
) -> dg.AssetMaterialization:
    """The image's object in Supabase Storage: its URL (a link in the UI) and object path."""
    metadata: dict[str, Any] = {
        "url": dg.MetadataValue.url(location.url),
        "url_mode": dg.MetadataValue.text(location.url_mode),
        "storage_object": dg.MetadataValue.text(f"{location.bucket}/{location.path}"),
        "path": dg.MetadataValue.path(stored.image_path),
        "sha256": dg.MetadataValue.text(stored.sha256),
        **_job(stored),
    }
    if location.sidecar_path:
        metadata["sidecar_object"] = dg.MetadataValue.text(
            f"{location.bucket}/{location.sidecar_path}"
        )
    return dg.AssetMaterialization(
        asset_key=STORAGE_OBJECT,
        description=stored.generated.plan.spec.prompt[:200],
        metadata=metadata,
    )


def row_materializations(
    stored: StoredImage, image_id: int, url: str | None
) -> list[dg.AssetMaterialization]:
    """The image's ``imagen.images`` row and its ``mai.imagen_usage`` row."""
    generated = stored.generated
    meta = generated.metadata
    image_row: dict[str, Any] = {
        "image_id": dg.MetadataValue.int(image_id),
        "path": dg.MetadataValue.path(stored.image_path),
        **_job(stored),
    }
    if url:
        image_row["url"] = dg.MetadataValue.url(url)
    usage_row: dict[str, Any] = {
        "generation_key": dg.MetadataValue.text(
            generation_key(generated.run_id, generated.attempt, generated.plan.variation)
        ),
        "backend": dg.MetadataValue.text(generated.plan.backend),
        "model": dg.MetadataValue.text(meta.model),
        "price_source": dg.MetadataValue.text(meta.price_source),
        "image_id": dg.MetadataValue.int(image_id),
        **_job(stored),
    }
    if meta.cost_usd is not None:
        usage_row["cost_usd"] = dg.MetadataValue.float(meta.cost_usd)
    description = generated.plan.spec.prompt[:200]
    return [
        dg.AssetMaterialization(IMAGES_TABLE, description=description, metadata=image_row),
        dg.AssetMaterialization(USAGE_TABLE, description=description, metadata=usage_row),
    ]


def parent_metadata(stored: StoredImage, parent_events: Mapping[str, int]) -> dict[str, Any]:
    """The images this one was made from: a table of their image ids, sha256 and origin, a
    link to the run that materialized each parent (``parent_<n>_run``) and one to that
    materialization on the image asset's page (``parent_<n>_materialization``)."""
    request = stored.generated.plan.request
    if not request.sources:
        return {}
    parents = [*request.sources, *([request.mask] if request.mask else [])]
    rows = "\n".join(
        f"| {parent.role} {parent.position + 1} | {parent.image_id or '-'} | "
        f"`{parent.sha256[:16]}` | {parent.origin.replace('|', '/')} |"
        for parent in parents
    )
    metadata: dict[str, Any] = {
        "parents": dg.MetadataValue.md(
            "| parent | image id | sha256 | from |\n|---|---|---|---|\n" + rows
        ),
        "parent_image_ids": dg.MetadataValue.json(
            [parent.image_id for parent in parents if parent.image_id is not None]
        ),
        "parent_sha256": dg.MetadataValue.json([parent.sha256 for parent in parents]),
        "source_mode": dg.MetadataValue.text(request.mode or "backend default"),
    }
    if request.strength is not None:
        metadata["source_strength"] = dg.MetadataValue.float(request.strength)
    for number, parent in enumerate(parents, start=1):
        if parent.run_id:
            metadata[f"parent_{number}_run"] = dg.MetadataValue.dagster_run(parent.run_id)
        if parent.sha256 in parent_events:
            metadata[f"parent_{number}_materialization"] = dg.MetadataValue.url(
                materialization_link(parent_events[parent.sha256])
            )
    return metadata


def materialization_link(timestamp_ms: int) -> str:
    """The UI's address of the image asset's materialization at ``timestamp_ms`` (the
    webserver's own links to an event: its asset page, Events tab, ``time`` in ms)."""
    return f"/assets/{'/'.join(IMAGE.path)}?view=events&time={timestamp_ms}"


def parent_materialization_times(
    instance: dg.DagsterInstance, stored: StoredImage
) -> dict[str, int]:
    """For each parent made by a run of this instance, the time (ms) of the image
    materialization that recorded it (the same sha256), read from that run's events."""
    request = stored.generated.plan.request
    parents = [*request.sources, *([request.mask] if request.mask else [])]
    wanted: dict[str, set[str]] = {}
    for parent in parents:
        if parent.run_id:
            wanted.setdefault(parent.run_id, set()).add(parent.sha256)
    found: dict[str, int] = {}
    for run_id, hashes in wanted.items():
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        for record in records:
            materialization = record.event_log_entry.asset_materialization
            if materialization is None or materialization.asset_key != IMAGE:
                continue
            sha256 = materialization.metadata.get("sha256")
            if sha256 is not None and sha256.value in hashes:
                found[str(sha256.value)] = int(record.event_log_entry.timestamp * 1000)
    return found


def _job(stored: StoredImage) -> dict[str, Any]:
    """The job id of a queued request, for every materialization of its images."""
    job_id = stored.generated.plan.spec.job_id
    return {} if job_id is None else {"job_id": dg.MetadataValue.int(job_id)}


def _preview(path: str) -> str:
    """The preview markdown, or a note if the image cannot be thumbnailed."""
    try:
        return preview_markdown(Path(path))
    except OSError as error:
        return f"(no preview: {error})"

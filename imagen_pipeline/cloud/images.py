"""Rows of ``imagen.images``: one per generated image, idempotent per generating run."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from imagen_pipeline.output.store import StoredImage


@dataclass(frozen=True)
class StorageLocation:
    """Where the image lives in Supabase Storage (absent when Storage is not configured)."""

    bucket: str
    path: str
    url: str | None


def upsert_image_row(
    conn: psycopg.Connection,
    stored: StoredImage,
    owner_user_id: str | None,
    location: StorageLocation | None,
    run_id: str,
) -> int:
    """Insert or complete the row for ``stored`` and link its job; returns the row id.

    The generating run id is unique per image, so a retried step or a re-executed run
    updates the same row instead of adding one. With a job, ``imagen.jobs.image_id`` is set
    in the same transaction, only while ``run_id`` owns the job.
    """
    generated = stored.generated
    plan = generated.plan
    meta = generated.metadata
    values = {
        "job_id": plan.spec.job_id,
        "owner_user_id": owner_user_id,
        "storage_bucket": location.bucket if location else None,
        "storage_path": location.path if location else None,
        "url": location.url if location else None,
        "width": generated.width,
        "height": generated.height,
        "mime": generated.mime_type,
        "bytes": stored.bytes,
        "sha256": stored.sha256,
        "prompt": plan.spec.prompt,
        "enriched_prompt": plan.request.prompt,
        "style": plan.request.style,
        "backend": plan.backend,
        "model": meta.model,
        "seed": meta.seed,
        "steps": meta.steps,
        "cost_usd": meta.cost_usd,
        "latency_s": meta.latency_s,
        "run_id": generated.run_id,
        "metadata": Jsonb(
            {
                "local_path": stored.image_path,
                "sidecar_path": stored.sidecar_path,
                "backend_type": plan.backend_type,
                "negative": plan.request.negative,
                "extra": meta.extra,
                "written_by_run_id": run_id,
            }
        ),
    }
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({name})s" for name in values)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in values if name != "run_id")
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO imagen.images ({columns}) VALUES ({placeholders})
            ON CONFLICT (run_id) DO UPDATE SET {updates}
            RETURNING id
            """,
            values,
        )
        row = cursor.fetchone()
        image_id = int(row[0]) if row else 0
        if plan.spec.job_id is not None:
            cursor.execute(
                "UPDATE imagen.jobs SET image_id = %s WHERE id = %s AND run_id = %s",
                (image_id, plan.spec.job_id, run_id),
            )
    return image_id

"""Rows of ``imagen.images``: one per generated image, idempotent per generating run and
variation; and its rows of ``imagen.image_parents``, the images it was made from."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from imagen_pipeline.cloud.sync import StorageLocation
from imagen_pipeline.output.store import StoredImage


def upsert_image_row(
    cursor: psycopg.Cursor,
    stored: StoredImage,
    location: StorageLocation | None,
    run_id: str,
) -> int:
    """Insert or complete the row for ``stored``; returns the row id.

    The generating run id and the variation are unique per image, so a retried step or a
    re-executed run updates the same row instead of adding one. Runs inside the caller's
    transaction.
    """
    generated = stored.generated
    plan = generated.plan
    meta = generated.metadata
    values = {
        "job_id": plan.spec.job_id,
        "owner_user_id": plan.owner_user_id,
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
        "backend_server": meta.server,
        "fallback_reason": plan.fallback_reason,
        "model": meta.model,
        "seed": meta.seed,
        "steps": meta.steps,
        "cost_usd": meta.cost_usd,
        "latency_s": meta.latency_s,
        "run_id": generated.run_id,
        "variation": plan.variation,
        "metadata": Jsonb(
            {
                "local_path": stored.image_path,
                "sidecar_path": stored.sidecar_path,
                "backend_type": plan.backend_type,
                "backend_options": plan.request.backend_opts,
                "negative": plan.request.negative,
                "mode": plan.request.mode if plan.request.sources else None,
                "strength": plan.request.strength,
                "extra": meta.extra,
                "written_by_run_id": run_id,
                "storage_sidecar_path": location.sidecar_path if location else None,
                "url_mode": location.url_mode if location else None,
                "url_expires_at": (
                    location.url_expires_at.isoformat()
                    if location and location.url_expires_at
                    else None
                ),
            }
        ),
    }
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({name})s" for name in values)
    keys = ("run_id", "variation")
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in values if name not in keys)
    cursor.execute(
        f"""
        INSERT INTO imagen.images ({columns}) VALUES ({placeholders})
        ON CONFLICT (run_id, variation) DO UPDATE SET {updates}
        RETURNING id
        """,
        values,
    )
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("INSERT ... RETURNING id returned no row")
    return int(row[0])


def insert_image_parents(cursor: psycopg.Cursor, stored: StoredImage, image_id: int) -> int:
    """The image's parents (its request's source images, then its mask) as rows of
    ``imagen.image_parents``, inside the caller's transaction; returns how many it has.
    Idempotent: a recorded parent is left as it is."""
    request = stored.generated.plan.request
    parents = [*request.sources, *([request.mask] if request.mask else [])]
    for parent in parents:
        cursor.execute(
            """
            INSERT INTO imagen.image_parents (child_id, position, role, parent_id, sha256, origin)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (child_id, role, position) DO NOTHING
            """,
            (image_id, parent.position, parent.role, parent.image_id, parent.sha256, parent.origin),
        )
    return len(parents)


def image_run_holding(
    conn: psycopg.Connection,
    bucket: str | None,
    path: str | None,
    job_id: int | None,
    variation: int,
) -> str | None:
    """The run id of the row that already holds this object path or job image, if any."""
    row = conn.execute(
        """
        SELECT run_id FROM imagen.images
         WHERE (storage_bucket = %(bucket)s AND storage_path = %(path)s)
            OR (job_id = %(job)s AND variation = %(variation)s)
         LIMIT 1
        """,
        {"bucket": bucket, "path": path, "job": job_id, "variation": variation},
    ).fetchone()
    conn.commit()
    return str(row[0]) if row else None

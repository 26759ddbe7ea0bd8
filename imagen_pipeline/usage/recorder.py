"""Rows of ``mai.imagen_usage``: what each generation that reached a backend cost."""

from __future__ import annotations

from typing import Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from imagen_pipeline.output.store import StoredImage
from imagen_pipeline.queue.repository import finish


class UsageOutcome(BaseModel):
    """What usage recording did for one generation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["recorded", "not_configured"]
    detail: str
    cost_usd: float


def generation_key(run_id: str, attempt: int) -> str:
    """Identifies one backend call: the generating run and its attempt."""
    return f"{run_id}:{attempt}"


def insert_usage_row(
    cursor: psycopg.Cursor,
    stored: StoredImage,
    owner_user_id: str | None,
    image_id: int | None,
) -> bool:
    """Insert the usage row of a successful generation; False if it was already recorded."""
    generated = stored.generated
    plan = generated.plan
    meta = generated.metadata
    cursor.execute(
        """
        INSERT INTO mai.imagen_usage (
            generation_key, backend_instance, backend_type, model, cost_usd, currency,
            latency_s, steps, tokens, owner_user_id, job_id, run_id, status, image_id)
        VALUES (%(key)s, %(instance)s, %(type)s, %(model)s, %(cost)s, 'USD',
                %(latency)s, %(steps)s, %(tokens)s, %(owner)s, %(job_id)s, %(run_id)s,
                'succeeded', %(image_id)s)
        ON CONFLICT (generation_key) DO NOTHING
        """,
        {
            "key": generation_key(generated.run_id, generated.attempt),
            "instance": plan.backend,
            "type": plan.backend_type,
            "model": meta.model,
            "cost": meta.cost_usd,
            "latency": meta.latency_s,
            "steps": meta.steps,
            "tokens": Jsonb(meta.extra.get("usage")) if meta.extra.get("usage") else None,
            "owner": owner_user_id,
            "job_id": plan.spec.job_id,
            "run_id": generated.run_id,
            "image_id": image_id,
        },
    )
    return cursor.rowcount == 1


def record_generation(
    conn: psycopg.Connection | None, stored: StoredImage, image_id: int | None, run_id: str
) -> UsageOutcome:
    """Write the usage row and, for a queued job, mark it done, in one transaction."""
    cost = stored.generated.metadata.cost_usd
    backend = stored.generated.plan.backend
    if conn is None:
        return UsageOutcome(
            status="not_configured",
            detail=f"usage tracking not configured (IMAGEN_DATABASE_URL is not set); "
            f"this image cost ${cost:.4f} on {backend}",
            cost_usd=cost,
        )
    job_id = stored.generated.plan.spec.job_id
    owner = stored.generated.plan.spec.owner_user_id
    with conn.transaction(), conn.cursor() as cursor:
        inserted = insert_usage_row(cursor, stored, owner, image_id)
        if job_id is not None:
            finish(conn, job_id, run_id, image_id)
    state = "recorded" if inserted else "already recorded"
    return UsageOutcome(
        status="recorded", detail=f"usage {state}: ${cost:.4f} on {backend}", cost_usd=cost
    )

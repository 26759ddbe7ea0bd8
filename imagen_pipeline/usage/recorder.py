"""Rows of ``mai.imagen_usage`` (what each backend call cost) and the one transaction that
records a finished image: its ``imagen.images`` row, its usage row and its job's ``done``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from imagen_pipeline.backends.pricing import describe_cost
from imagen_pipeline.cloud.errors import CloudSyncError, database_errors
from imagen_pipeline.cloud.images import image_run_holding, upsert_image_row
from imagen_pipeline.cloud.sync import SyncOutcome
from imagen_pipeline.errors import BackendError
from imagen_pipeline.output.store import StoredImage
from imagen_pipeline.planning import GenerationPlan
from imagen_pipeline.queue.repository import finish

ERROR_MAX_CHARS = 2000


class UsageOutcome(BaseModel):
    """What recording did for one image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["recorded", "not_configured"]
    detail: str
    cost_usd: float | None
    """None when no price is known for the model."""
    image_id: int | None = None
    job_done: bool = False
    """True when this recording marked the run's imagen.jobs row done."""


def generation_key(run_id: str, attempt: int) -> str:
    """Identifies one backend call: the generating run and its attempt."""
    return f"{run_id}:{attempt}"


_INSERT_USAGE = """
    INSERT INTO mai.imagen_usage (
        generation_key, backend_instance, backend_type, backend_server, fallback_reason, model,
        cost_usd, price_source, currency, latency_s, steps, tokens, owner_user_id, job_id,
        run_id, status, error, image_id)
    VALUES (%(key)s, %(instance)s, %(type)s, %(server)s, %(fallback)s, %(model)s, %(cost)s,
            %(price_source)s, 'USD',
            %(latency)s, %(steps)s, %(tokens)s, %(owner)s, %(job_id)s, %(run_id)s,
            %(status)s, %(error)s, %(image_id)s)
    ON CONFLICT (generation_key) DO NOTHING
"""


def insert_usage_row(
    cursor: psycopg.Cursor,
    stored: StoredImage,
    image_id: int | None,
) -> bool:
    """Insert the usage row of a successful generation; False if it was already recorded."""
    generated = stored.generated
    plan = generated.plan
    meta = generated.metadata
    usage = meta.extra.get("usage")
    cursor.execute(
        _INSERT_USAGE,
        {
            "key": generation_key(generated.run_id, generated.attempt),
            "instance": plan.backend,
            "type": plan.backend_type,
            "server": meta.server,
            "fallback": plan.fallback_reason,
            "model": meta.model,
            "cost": meta.cost_usd,
            "price_source": meta.price_source,
            "latency": meta.latency_s,
            "steps": meta.steps,
            "tokens": Jsonb(usage) if usage else None,
            "owner": plan.owner_user_id,
            "job_id": plan.spec.job_id,
            "run_id": generated.run_id,
            "status": "succeeded",
            "error": None,
            "image_id": image_id,
        },
    )
    return cursor.rowcount == 1


def record_generation(
    conn: psycopg.Connection | None, stored: StoredImage, synced: SyncOutcome, run_id: str
) -> UsageOutcome:
    """In one transaction: the image row, the usage row and, for a queued job, its ``done``.

    Either all three are written or none, so a failure here leaves nothing half-recorded and
    a retry (or re-execution from this step) writes them once: the image row is keyed by the
    generating run, the usage row by run and attempt.
    """
    generated = stored.generated
    cost = generated.metadata.cost_usd
    backend = generated.plan.backend
    if conn is None:
        return UsageOutcome(
            status="not_configured",
            detail="image and usage rows not recorded (IMAGEN_DATABASE_URL is not set); "
            f"this image cost {describe_cost(cost)} on {backend}",
            cost_usd=cost,
        )
    job_id = generated.plan.spec.job_id
    location = synced.location
    try:
        with conn.transaction(), conn.cursor() as cursor:
            image_id = upsert_image_row(cursor, stored, location, run_id)
            inserted = insert_usage_row(cursor, stored, image_id)
            finished = finish(conn, job_id, run_id, image_id) if job_id is not None else None
    except psycopg.errors.UniqueViolation:
        holder = image_run_holding(
            conn, location.bucket if location else None, location.path if location else None, job_id
        )
        what = (
            f"object {location.bucket}/{location.path}" if location else f"imagen.jobs row {job_id}"
        )
        raise CloudSyncError(
            f"imagen.images already has a row for {what} from run {holder or 'unknown'}; "
            "nothing was recorded. Make object paths unique per image "
            "(add {run_id} to cloud.path_template)"
        ) from None
    usage = "recorded" if inserted else "already recorded"
    job = ""
    if finished is not None:
        job = f"; imagen.jobs row {job_id} " + (
            "done" if finished else "was no longer running for this run and is left as it is"
        )
    return UsageOutcome(
        status="recorded",
        detail=(
            f"imagen.images row {image_id}; usage {usage}: {describe_cost(cost)} on {backend}{job}"
        ),
        cost_usd=cost,
        image_id=image_id,
        job_done=bool(finished),
    )


def record_failed_generation(
    connect: Callable[[], psycopg.Connection],
    plan: GenerationPlan,
    run_id: str,
    attempt: int,
    error: BackendError,
) -> str:
    """Usage row (status ``failed``, cost 0) for a backend call that failed; returns a note.

    Never raises for database problems: the backend's error is what the run must report.
    """
    try:
        with (
            database_errors("recording a failed generation"),
            connect() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            cursor.execute(
                _INSERT_USAGE,
                {
                    "key": generation_key(run_id, attempt),
                    "instance": plan.backend,
                    "type": plan.backend_type,
                    "server": None,
                    "fallback": None,
                    "model": plan.model,
                    "cost": 0,
                    "price_source": "not_billed",
                    "latency": None,
                    "steps": plan.request.steps,
                    "tokens": None,
                    "owner": plan.owner_user_id,
                    "job_id": plan.spec.job_id,
                    "run_id": run_id,
                    "status": "failed",
                    "error": str(error)[:ERROR_MAX_CHARS],
                    "image_id": None,
                },
            )
    except (CloudSyncError, psycopg.Error) as db_error:
        return f"usage of the failed call not recorded: {db_error}"
    return f"usage of the failed call recorded (attempt {attempt + 1})"

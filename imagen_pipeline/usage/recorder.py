"""Rows of ``mai.imagen_usage`` (what each backend call cost) and the one transaction that
records a run's finished images: their ``imagen.images`` rows, their usage rows and their
job's ``done``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict

from imagen_pipeline.backends.pricing import describe_cost
from imagen_pipeline.cloud.images import (
    image_run_holding,
    insert_image_parents,
    upsert_image_row,
)
from imagen_pipeline.cloud.sync import SyncOutcome
from imagen_pipeline.db.errors import DatabaseStep, DatabaseUnavailableError, database_errors
from imagen_pipeline.errors import BackendError
from imagen_pipeline.generate.budget import release_holds
from imagen_pipeline.generate.job_records import discard_job_record
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.output.store import StoredImage
from imagen_pipeline.queue.repository import finish
from imagen_pipeline.storage.errors import CloudSyncError

ERROR_MAX_CHARS = 2000


class UsageOutcome(BaseModel):
    """What recording did for a run's images."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["recorded", "not_configured"]
    detail: str
    cost_usd: float | None
    """None when no price is known for the model."""
    image_id: int | None = None
    """The first image's row (variation 0)."""
    image_ids: list[int] = []
    """Every image's row, by variation."""


def generation_key(run_id: str, attempt: int, variation: int = 0) -> str:
    """Identifies one backend call: the generating run, its attempt and, for image n > 0 of
    a request for several, the variation (``<run>:v<n>:<attempt>``)."""
    return f"{run_id}:v{variation}:{attempt}" if variation else f"{run_id}:{attempt}"


_INSERT_USAGE = """
    INSERT INTO mai.imagen_usage (
        generation_key, backend_instance, backend_type, backend_server, fallback_reason, model,
        cost_usd, price_source, currency, latency_s, steps, tokens, owner_user_id, job_id,
        run_id, status, error, image_id, variation)
    VALUES (%(key)s, %(instance)s, %(type)s, %(server)s, %(fallback)s, %(model)s, %(cost)s,
            %(price_source)s, 'USD',
            %(latency)s, %(steps)s, %(tokens)s, %(owner)s, %(job_id)s, %(run_id)s,
            %(status)s, %(error)s, %(image_id)s, %(variation)s)
    ON CONFLICT (generation_key) DO NOTHING
"""


def insert_usage_row(
    cursor: psycopg.Cursor,
    stored: StoredImage,
    image_id: int | None,
) -> bool:
    """Insert the usage row of a successful generation and drop its budget hold; False if it
    was already recorded."""
    generated = stored.generated
    plan = generated.plan
    meta = generated.metadata
    usage = meta.extra.get("usage")
    cursor.execute(
        _INSERT_USAGE,
        {
            "key": generation_key(generated.run_id, generated.attempt, plan.variation),
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
            "variation": plan.variation,
        },
    )
    inserted = cursor.rowcount == 1
    release_holds(cursor, generated.run_id, plan.variation)
    return inserted


def record_images(
    conn: psycopg.Connection | None,
    images: list[tuple[StoredImage, SyncOutcome]],
    run_id: str,
) -> UsageOutcome:
    """In one transaction: every image's row, its parents (``imagen.image_parents``) and
    usage row and, for a queued job, its ``done`` (the run records all ``count`` images of
    its job at once).

    Either all are written or none, so a failure here leaves nothing half-recorded and a
    retry (or re-execution from this step) writes them once: an image row is keyed by the
    generating run and the variation, a usage row by run, variation and attempt. Once the
    job's ``done`` is committed, its records of what it generated for re-use are removed
    (:mod:`imagen_pipeline.generate.job_records`).
    """
    first = images[0][0].generated
    costs = [stored.generated.metadata.cost_usd for stored, _ in images]
    cost = None if any(c is None for c in costs) else sum(c for c in costs if c is not None)
    backend = first.plan.backend
    what = "this image" if len(images) == 1 else f"these {len(images)} images"
    if conn is None:
        return UsageOutcome(
            status="not_configured",
            detail="image and usage rows not recorded (IMAGEN_DATABASE_URL is not set); "
            f"{what} cost {describe_cost(cost)} on {backend}",
            cost_usd=cost,
        )
    job_id = first.plan.spec.job_id
    image_ids: list[int] = []
    inserted = 0
    current: tuple[StoredImage, SyncOutcome] = images[0]
    try:
        with conn.transaction(), conn.cursor() as cursor:
            for current in images:
                stored, synced = current
                image_id = upsert_image_row(cursor, stored, synced.location, run_id)
                image_ids.append(image_id)
                insert_image_parents(cursor, stored, image_id)
                inserted += insert_usage_row(cursor, stored, image_id)
            finished = finish(conn, job_id, run_id, image_ids[0]) if job_id is not None else None
    except psycopg.errors.UniqueViolation:
        stored, synced = current
        location = synced.location
        variation = stored.generated.plan.variation
        holder = image_run_holding(
            conn,
            location.bucket if location else None,
            location.path if location else None,
            job_id,
            variation,
        )
        held = (
            f"object {location.bucket}/{location.path}"
            if location
            else f"imagen.jobs row {job_id} (variation {variation})"
        )
        raise CloudSyncError(
            f"imagen.images already has a row for {held} from run {holder or 'unknown'}; "
            "nothing was recorded. Make object paths unique per image "
            "(add {run_id} to cloud.path_template)"
        ) from None
    if finished:
        for stored, _ in images:
            discard_job_record(stored.generated)
    usage = (
        "recorded"
        if inserted == len(images)
        else (
            "already recorded"
            if inserted == 0
            else f"recorded ({len(images) - inserted} already were)"
        )
    )
    job = ""
    if finished is not None:
        job = f"; imagen.jobs row {job_id} " + (
            "done" if finished else "was no longer running for this run and is left as it is"
        )
    rows = ", ".join(str(image_id) for image_id in image_ids)
    return UsageOutcome(
        status="recorded",
        detail=(
            f"imagen.images row{'s' if len(image_ids) > 1 else ''} {rows}; "
            f"usage {usage}: {describe_cost(cost)} on {backend}{job}"
        ),
        cost_usd=cost,
        image_id=image_ids[0],
        image_ids=image_ids,
    )


def record_failed_generation(
    connect: Callable[[], psycopg.Connection],
    plan: GenerationPlan,
    run_id: str,
    attempt: int,
    error: BackendError,
) -> str:
    """Usage row (status ``failed``, cost 0) for a backend call that failed, its budget hold
    dropped (a retry checks again); returns a note.

    Never raises for database problems: the backend's error is what the run must report.
    """
    try:
        with (
            database_errors(DatabaseStep.FAILED_CALL),
            connect() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            cursor.execute(
                _INSERT_USAGE,
                {
                    "key": generation_key(run_id, attempt, plan.variation),
                    "instance": plan.backend,
                    "type": plan.backend_type,
                    "server": None,
                    "fallback": plan.fallback_reason,
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
                    "variation": plan.variation,
                },
            )
            release_holds(cursor, run_id, plan.variation)
    except (DatabaseUnavailableError, psycopg.Error) as db_error:
        return f"usage of the failed call not recorded: {db_error}"
    return f"usage of the failed call recorded (attempt {attempt + 1})"

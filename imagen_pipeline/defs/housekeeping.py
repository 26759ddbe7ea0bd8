"""Retention in the code location: the ``housekeeping`` job and its daily schedule.

The schedule is on by default (``DefaultScheduleStatus.RUNNING``): wherever a daemon runs
the code location, finished runs older than ``retention:``'s ages are deleted once a day.
``retention.enabled: false`` turns the deleting off without touching the schedule; the job
can also be launched by hand from the UI (its config can set ``older_than`` or
``dry_run``). Plain logic: :mod:`imagen_pipeline.housekeeping.cleanup`.
"""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from imagen_pipeline.config.ages import parse_age
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource
from imagen_pipeline.housekeeping.cleanup import clean_up
from imagen_pipeline.run_tags import TAG_SOURCE

HOUSEKEEPING_CRON = "17 3 * * *"
"""Daily at 03:17 UTC: a quiet hour, off the full hour other schedules crowd."""


class HousekeepingConfig(dg.Config):
    """What one clean-up takes."""

    older_than: str | None = Field(
        default=None,
        description="Take every finished run and staging record older than this (30d, 12h, "
        "0s) instead of retention:'s ages.",
    )
    dry_run: bool = Field(default=False, description="Count what would go; delete nothing.")


@dg.op(description="Delete finished runs past their age and sweep the staging folder.")
def clean_up_runs_and_staging(
    context: dg.OpExecutionContext,
    config: HousekeepingConfig,
    imagen: ImagenResource,
    imagen_db: ImagenDatabaseResource,
) -> dg.Output[str]:
    """One clean-up (:func:`imagen_pipeline.housekeeping.cleanup.clean_up`) on this run's
    instance; nothing when ``retention.enabled`` is false and no age was given."""
    retention = imagen.retention_settings()
    if not retention.enabled and config.older_than is None:
        message = "retention.enabled is false in imagen.yaml: nothing deleted"
        context.log.info(message)
        return dg.Output(message)
    older_than = parse_age(config.older_than, "older_than") if config.older_than else None
    result = clean_up(
        context.instance,
        retention,
        Path(imagen.output.directory),
        imagen_db.url(),
        datetime.now(UTC),
        older_than=older_than,
        dry_run=config.dry_run,
    )
    context.log.info(result.summary())
    return dg.Output(
        result.summary(),
        metadata={
            "runs_deleted": result.runs.total,
            "runs_kept_for_their_job": result.runs.kept_for_their_job,
            "staging_files_swept": result.staging.records + result.staging.images,
            "staging_bytes_swept": result.staging.bytes,
            "dry_run": result.dry_run,
        },
    )


def build_housekeeping_job() -> dg.JobDefinition:
    """The one-op ``housekeeping`` job (in-process executor: one step)."""

    @dg.job(
        name="housekeeping",
        description="Delete finished runs older than retention: allows, with their event "
        "logs and compute logs, and stale files of the staging folder.",
        executor_def=dg.in_process_executor,
        tags={TAG_SOURCE: "housekeeping"},
    )
    def housekeeping() -> None:
        clean_up_runs_and_staging()

    return housekeeping


def build_housekeeping_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """``imagen_housekeeping_schedule``: ``job`` daily, on by default."""
    return dg.ScheduleDefinition(
        name="imagen_housekeeping_schedule",
        job=job,
        cron_schedule=HOUSEKEEPING_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily clean-up of finished runs and staging records (imagen.yaml retention:).",
    )

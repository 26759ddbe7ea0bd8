"""One clean-up: old runs out of the Dagster instance, stale files out of the staging folder.

The daily ``imagen_housekeeping_schedule`` (its ``housekeeping`` job) and
``imagen housekeeping`` both call :func:`clean_up`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from imagen_pipeline.config.models import RetentionConfig
from imagen_pipeline.db.connection import connect
from imagen_pipeline.db.errors import DatabaseStep, database_errors
from imagen_pipeline.housekeeping.runs import (
    FAILED,
    SUCCEEDED,
    RunsDeleted,
    count_old_runs,
    delete_old_runs,
)
from imagen_pipeline.housekeeping.staging import StagingSwept, sweep_staging

ENDED = ("done", "failed", "canceled")
"""``imagen.jobs`` statuses a job does not leave by itself (``imagen queue retry`` aside)."""


@dataclass(frozen=True)
class CleanUp:
    """What a clean-up did, or in a dry run would do."""

    runs: RunsDeleted
    staging: StagingSwept
    dry_run: bool

    def summary(self) -> str:
        """One line for a log or a terminal."""
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"{verb} {self.runs.total} runs ({self.runs.succeeded} succeeded, "
            f"{self.runs.failed} failed or canceled) with their event logs and compute logs; "
            f"{self.staging.records} job records and {self.staging.images} staged images "
            f"({self.staging.bytes} bytes) from the staging folder"
        )
        if self.runs.orphan_log_folders:
            text += f"; {self.runs.orphan_log_folders} compute log folders of runs deleted earlier"
        if self.runs.tick_log_files:
            text += f"; {self.runs.tick_log_files} log files of sensor ticks"
        if self.runs.kept_for_their_job:
            text += (
                f"; kept {self.runs.kept_for_their_job} runs whose imagen.jobs row has not "
                "ended yet"
            )
        if self.staging.records_kept_without_database:
            text += (
                f"; kept {self.staging.records_kept_without_database} job records "
                "(no imagen database to say whether their jobs ended)"
            )
        return text


def run_ages(
    retention: RetentionConfig, older_than: timedelta | None
) -> dict[tuple[dg.DagsterRunStatus, ...], timedelta]:
    """The age after which each kind of finished run goes: ``older_than`` for all, else
    ``retention``'s."""
    return {
        SUCCEEDED: older_than if older_than is not None else retention.age("succeeded_runs"),
        FAILED: older_than if older_than is not None else retention.age("failed_runs"),
    }


def clean_up(
    instance: dg.DagsterInstance,
    retention: RetentionConfig,
    output_dir: Path,
    database_url: str | None,
    now: datetime,
    older_than: timedelta | None = None,
    dry_run: bool = False,
) -> CleanUp:
    """Delete finished runs past their age (``older_than``, else ``retention``'s ages) and
    sweep the staging folder of ``output_dir`` (``older_than``, else ``retention.staging``).
    ``database_url``: the imagen database, asked which jobs have ended; without one, job
    records stay and every old run goes."""
    ages = run_ages(retention, older_than)
    staging_age = older_than if older_than is not None else retention.age("staging")

    def unfinished(job_ids: Iterable[int]) -> set[int]:
        ids = list(job_ids)
        if database_url is None or not ids:
            return set()
        with database_errors(DatabaseStep.HOUSEKEEPING), connect(database_url) as conn:
            rows = conn.execute(
                "SELECT id FROM imagen.jobs WHERE id = ANY(%s) AND status <> ALL(%s)",
                (ids, list(ENDED)),
            ).fetchall()
        return {row[0] for row in rows}

    def ended_before(job_ids: Iterable[int]) -> set[int]:
        ids = list(job_ids)
        if not ids:
            return set()
        with database_errors(DatabaseStep.HOUSEKEEPING), connect(database_url) as conn:
            rows = conn.execute(
                "SELECT id FROM unnest(%s::bigint[]) AS wanted(id) WHERE NOT EXISTS ("
                " SELECT 1 FROM imagen.jobs AS j WHERE j.id = wanted.id"
                " AND (j.status <> ALL(%s) OR j.finished_at >= %s))",
                (ids, list(ENDED), now - staging_age),
            ).fetchall()
        return {row[0] for row in rows}

    if dry_run:
        runs = count_old_runs(instance, ages, now, retention.batch_size)
    else:
        runs = delete_old_runs(instance, ages, now, retention.batch_size, unfinished)
    staging = sweep_staging(
        output_dir,
        staging_age,
        now,
        ended_before if database_url is not None else None,
        dry_run=dry_run,
    )
    return CleanUp(runs=runs, staging=staging, dry_run=dry_run)

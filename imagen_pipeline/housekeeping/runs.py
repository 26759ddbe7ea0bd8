"""Finished Dagster runs past their age, deleted with their event logs and compute logs.

Dagster keeps every run, its event log and its compute log files for ever (its
``retention:`` instance setting covers schedule and sensor ticks only). This module deletes
them through the public instance API: ``get_run_records`` with a ``RunsFilter`` finds a
batch of the oldest finished runs, ``DagsterInstance.delete_run`` drops each run with its
events, and the compute log manager's ``delete_logs`` removes the run's captured files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from imagen_pipeline.atomic_files import remove_if_empty
from imagen_pipeline.run_tags import TAG_JOB_ID

SUCCEEDED = (dg.DagsterRunStatus.SUCCESS,)
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
"""Runs kept for ``retention.failed_runs``: failed and canceled."""
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class OldRun:
    """A finished run past its age."""

    run_id: str
    status: dg.DagsterRunStatus
    job_id: int | None
    """The ``imagen.jobs`` row it ran, if any."""


def old_runs(
    instance: dg.DagsterInstance,
    statuses: tuple[dg.DagsterRunStatus, ...],
    older_than: timedelta,
    now: datetime,
    limit: int,
) -> list[OldRun]:
    """Up to ``limit`` runs with one of ``statuses`` last updated before ``now - older_than``,
    oldest first."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=list(statuses), updated_before=now - older_than),
        limit=limit,
        ascending=True,
    )
    return [
        OldRun(record.dagster_run.run_id, record.dagster_run.status, _job_id(record.dagster_run))
        for record in records
    ]


def _job_id(run: dg.DagsterRun) -> int | None:
    value = run.tags.get(TAG_JOB_ID, "")
    return int(value) if value.isdigit() else None


def delete_run(instance: dg.DagsterInstance, run_id: str) -> None:
    """Delete one run, its event log and its compute log files."""
    instance.delete_run(run_id)
    instance.compute_log_manager.delete_logs(prefix=[run_id])


@dataclass
class RunsDeleted:
    """What one clean-up of runs did (or, in a dry run, would do)."""

    succeeded: int = 0
    failed: int = 0
    kept_for_their_job: int = 0
    """Old runs left alone because their ``imagen.jobs`` row has not ended yet (the jobs
    sensor still reads the run to finish the row)."""
    orphan_log_folders: int = 0
    """Compute log folders of runs the instance no longer has."""
    tick_log_files: int = 0
    """Captured logs of sensor and schedule ticks past the age."""

    @property
    def total(self) -> int:
        """Runs deleted."""
        return self.succeeded + self.failed


def count_old_runs(
    instance: dg.DagsterInstance,
    ages: dict[tuple[dg.DagsterRunStatus, ...], timedelta],
    now: datetime,
    batch_size: int,
) -> RunsDeleted:
    """What :func:`delete_old_runs` would delete (runs of jobs that have not ended included:
    which of those will still be running then is not known now)."""
    counted = RunsDeleted()
    for statuses, age in ages.items():
        count = instance.get_runs_count(
            dg.RunsFilter(statuses=list(statuses), updated_before=now - age)
        )
        if statuses == SUCCEEDED:
            counted.succeeded += count
        else:
            counted.failed += count
    counted.orphan_log_folders = len(orphan_log_folders(instance, batch_size))
    counted.tick_log_files = len(old_tick_logs(instance, min(ages.values()), now))
    return counted


def delete_old_runs(
    instance: dg.DagsterInstance,
    ages: dict[tuple[dg.DagsterRunStatus, ...], timedelta],
    now: datetime,
    batch_size: int,
    unfinished_jobs: Callable[[Iterable[int]], set[int]],
) -> RunsDeleted:
    """Delete, batch by batch, every run with a status in ``ages`` older than its age.

    ``unfinished_jobs`` says which of some ``imagen.jobs`` ids have not ended: their runs
    are kept, since the jobs sensor still reads a job's run to finish its row."""
    deleted = RunsDeleted()
    for statuses, age in ages.items():
        kept: set[str] = set()
        while True:
            found = old_runs(instance, statuses, age, now, batch_size + len(kept))
            batch = [run for run in found if run.run_id not in kept]
            if not batch:
                break
            waiting = unfinished_jobs({run.job_id for run in batch if run.job_id is not None})
            for run in batch:
                if run.job_id in waiting:
                    kept.add(run.run_id)
                    deleted.kept_for_their_job += 1
                    continue
                delete_run(instance, run.run_id)
                if run.status in SUCCEEDED:
                    deleted.succeeded += 1
                else:
                    deleted.failed += 1
    for run_id in orphan_log_folders(instance, batch_size):
        instance.compute_log_manager.delete_logs(prefix=[run_id])
        deleted.orphan_log_folders += 1
    tick_logs = old_tick_logs(instance, min(ages.values()), now)
    delete_tick_logs(tick_logs)
    deleted.tick_log_files = len(tick_logs)
    return deleted


def _capture_folder(instance: dg.DagsterInstance) -> Path | None:
    folder_of = getattr(instance.compute_log_manager, "capture_folder", None)
    if folder_of is None:
        return None
    root = Path(folder_of())
    return root if root.is_dir() else None


def old_tick_logs(instance: dg.DagsterInstance, older_than: timedelta, now: datetime) -> list[Path]:
    """Captured logs of sensor and schedule ticks (``<capture folder>/<repository>/<sensor>/
    <tick>.err``, one per tick that logged) last written before ``now - older_than``.
    Dagster's tick retention purges the ticks, not these files."""
    root = _capture_folder(instance)
    if root is None:
        return []
    cutoff = (now - older_than).timestamp()
    return [
        path
        for top in root.iterdir()
        if top.is_dir() and not _RUN_ID.match(top.name)
        for path in top.rglob("*")
        if path.is_file() and path.stat().st_mtime < cutoff
    ]


def delete_tick_logs(paths: list[Path]) -> None:
    """Remove tick log files, then the folders they leave empty."""
    folders = set()
    for path in paths:
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        remove_if_empty(folder)
        remove_if_empty(folder.parent)


def orphan_log_folders(instance: dg.DagsterInstance, batch_size: int) -> list[str]:
    """Run ids whose compute log folder is left while the instance has no such run.

    A run's capture marks itself complete (an empty ``.complete`` file) after the run has
    finished, so a run deleted as soon as it finished can get its folder back. Only a
    compute log manager that says where it captures (``capture_folder()``, as
    :class:`~imagen_pipeline.instance.file_compute_logs.FileComputeLogManager`) is looked at."""
    root = _capture_folder(instance)
    if root is None:
        return []
    names = [path.name for path in root.iterdir() if path.is_dir() and _RUN_ID.match(path.name)]
    orphans: list[str] = []
    for start in range(0, len(names), batch_size):
        chunk = names[start : start + batch_size]
        known = {
            record.dagster_run.run_id
            for record in instance.get_run_records(filters=dg.RunsFilter(run_ids=chunk))
        }
        orphans.extend(name for name in chunk if name not in known)
    return orphans

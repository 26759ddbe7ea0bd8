"""Sweeping the staging folder: what failed jobs and interrupted runs left behind.

A queued job's staged image and its record (``job-<id>.json``,
:mod:`imagen_pipeline.generate.job_records`) stay in ``<output>/.imagen-staging`` until the
job is done, so that a retried job re-uses the image. A job that failed, or was canceled,
and is never retried leaves them there for good, as does a run without a job that stopped
between its generate and write steps. The sweep removes a record once its job ended more
than the staging age ago (or no longer exists), and any staged image that no record names
once its file is that old. Final images (``stored_path``) are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from imagen_pipeline.atomic_files import remove_if_empty
from imagen_pipeline.generate.job_records import JobRecord
from imagen_pipeline.generate.staging import staging_dir

_RECORD = re.compile(r"^job-(\d+)(?:-v\d+)?\.json$")


@dataclass
class StagingSwept:
    """What one sweep removed (or, in a dry run, would remove)."""

    records: int = 0
    images: int = 0
    bytes: int = 0
    records_kept_without_database: int = 0
    """Job records left because no imagen database could say whether their job ended."""


def sweep_staging(
    output_dir: Path,
    older_than: timedelta,
    now: datetime,
    ended_jobs: Callable[[Iterable[int]], set[int]] | None,
    dry_run: bool = False,
) -> StagingSwept:
    """Remove stale job records and unreferenced staged images from ``output_dir``'s
    staging folder. ``ended_jobs`` returns which job ids ended before ``now - older_than``
    or do not exist; ``None`` (no database): job records are all kept."""
    folder = staging_dir(output_dir)
    swept = StagingSwept()
    if not folder.is_dir():
        return swept
    records = {
        path: int(match.group(1))
        for path in folder.iterdir()
        if (match := _RECORD.match(path.name))
    }
    if ended_jobs is None:
        stale: set[int] = set()
        swept.records_kept_without_database = len(records)
    else:
        stale = ended_jobs(set(records.values()))
    referenced: set[Path] = set()
    for path, job_id in records.items():
        staged = _staged_image_of(path)
        if job_id not in stale:
            if staged is not None:
                referenced.add(staged)
            continue
        swept.records += 1
        swept.bytes += _size(path)
        if not dry_run:
            path.unlink(missing_ok=True)
    cutoff = (now - older_than).timestamp()
    for path in folder.iterdir():
        if path in records or path in referenced or not path.is_file():
            continue
        if path.stat().st_mtime >= cutoff:
            continue
        swept.images += 1
        swept.bytes += _size(path)
        if not dry_run:
            path.unlink(missing_ok=True)
    if not dry_run:
        remove_if_empty(folder)
    return swept


def _staged_image_of(record_path: Path) -> Path | None:
    try:
        record = JobRecord.model_validate_json(record_path.read_bytes())
    except (OSError, ValueError):
        return None
    return Path(record.generated.staged_path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

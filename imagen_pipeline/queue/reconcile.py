"""What to do with an unsettled ``imagen.jobs`` row, given the state of its Dagster run.

Pure decisions (no database, no Dagster), so every case is testable on its own. The sensor
gathers :class:`RunFacts` from the Dagster instance and applies the :class:`Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from imagen_pipeline.queue.rows import JobRow

FINISHED_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

DecisionKind = Literal[
    "leave", "requeue", "fail", "finish", "cancel_run", "abandon_run", "close_cancel"
]


@dataclass(frozen=True)
class RunFacts:
    """The newest Dagster run for a row's current attempt."""

    run_id: str
    status: str
    will_retry: bool = False
    step_failure: str | None = None
    idle_s: float | None = None
    """Seconds since the run's last event; only known for long-running started runs."""

    @property
    def finished(self) -> bool:
        """True once the run can no longer change the row."""
        return self.status in FINISHED_RUN_STATUSES


@dataclass(frozen=True)
class Decision:
    """One action for one row; ``detail`` is the error text or reason where there is one."""

    kind: DecisionKind
    detail: str = ""
    run_id: str | None = None


def decide(
    row: JobRow,
    run: RunFacts | None,
    now: datetime,
    grace: timedelta,
    max_attempts: int,
    stalled_after: timedelta | None = None,
) -> Decision:
    """The action that brings ``row`` in line with ``run``.

    A started run with no event for ``stalled_after`` has lost its worker (Dagster's default
    run launcher cannot tell): it is marked failed so that run retries or this
    reconciliation can take over.
    """
    if row.status == "canceled":
        if run is not None and not run.finished:
            return Decision("cancel_run", run_id=run.run_id)
        return Decision("close_cancel")

    if run is None:
        last_change = row.updated_at or row.created_at or now
        if now - last_change < grace:
            return Decision("leave")
        return _retry_or_fail(
            row,
            f"no run was started for attempt {row.attempts}; the operators can see why in "
            "the imagen_jobs_sensor's ticks",
            max_attempts,
        )

    if (
        run.status == "STARTED"
        and run.idle_s is not None
        and stalled_after is not None
        and run.idle_s >= stalled_after.total_seconds()
    ):
        return Decision(
            "abandon_run",
            f"run {run.run_id} made no progress for {run.idle_s:.0f} s; its worker is gone",
            run.run_id,
        )
    if not run.finished or (run.status == "FAILURE" and run.will_retry):
        return Decision("leave")
    if run.status == "SUCCESS":
        return Decision("finish", run_id=run.run_id)
    if run.status == "FAILURE" and run.step_failure:
        return Decision("fail", run.step_failure, run_id=run.run_id)
    return _retry_or_fail(row, f"run {run.run_id} ended {run.status}", max_attempts, run.run_id)


def _retry_or_fail(
    row: JobRow, reason: str, max_attempts: int, run_id: str | None = None
) -> Decision:
    if row.attempts < max_attempts:
        return Decision(
            "requeue", f"{reason}; retrying (attempt {row.attempts} of {max_attempts})", run_id
        )
    return Decision("fail", f"{reason} (after {row.attempts} attempts)", run_id)

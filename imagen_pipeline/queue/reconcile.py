"""What to do with an unsettled ``imagen.jobs`` row, given the state of its Dagster run.

Pure decisions (no database, no Dagster), so every case is testable on its own. The sensor
gathers :class:`RunFacts` from the Dagster instance and applies the :class:`Decision`.

Whose fault a failed run is (:data:`imagen_pipeline.errors.Fault`) decides the row's fate:
the request's fails it and counts the attempt; an outage (the run could not be launched,
no worker took it, its worker died, a backend, database or Storage stayed away through the
step's retries) sends it back to ``pending`` with the attempt given back, to start again
when the part is back (:mod:`imagen_pipeline.queue.holds`); the server's (its set-up, a bug,
the daily budget) fails it with the attempt given back. The texts written into the row are
for its owner: never a run id, a host or a class name; the operator's detail is in
``Decision.detail`` (the sensor's log) and the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from imagen_pipeline.errors import SEE_THE_RUN, Fault
from imagen_pipeline.queue.holds import (
    BROKER_DOWN,
    NO_WORKER,
    RUN_LOST,
    WAITING_FOR_SERVER,
    WAITING_FOR_SLOT,
    WAITING_FOR_WORKER,
    LaunchPath,
)
from imagen_pipeline.queue.rows import MAX_INTERRUPTIONS, JobRow

FINISHED_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
INTERRUPTED_TOO_OFTEN = (
    "the server was interrupted {n} times while working on this job; retry it later"
)
STOPPED_BY_OPERATOR = "the operators stopped this job's run; retry the job to run it again"
SERVER_FAULT = f"the server could not run this job; {SEE_THE_RUN}"

DecisionKind = Literal[
    "leave",
    "requeue_lost",
    "fail",
    "fail_refund",
    "finish",
    "note_waiting",
    "cancel_run",
    "abandon_run",
    "close_cancel",
]


@dataclass(frozen=True)
class RunFacts:
    """The newest Dagster run for a row's current attempt."""

    run_id: str
    status: str
    will_retry: bool = False
    step_failure: str | None = None
    """The first step failure's public sentence, if a step failed."""
    fault: Fault | None = None
    """Whose fault a failed run is (None: not failed)."""
    failed_step: str | None = None
    """The step key of the first step failure."""
    backend: str | None = None
    queue: str | None = None
    """The worker queue the run was sent to (None: the launcher's default)."""
    idle_s: float | None = None
    """Seconds since the run's last event; only known for long-running started runs."""

    @property
    def finished(self) -> bool:
        """True once the run can no longer change the row."""
        return self.status in FINISHED_RUN_STATUSES


@dataclass(frozen=True)
class Decision:
    """One action for one row: ``public`` is the text written into the row (its error or
    progress text), ``detail`` the operator's account for the sensor's log.
    ``backend_down``: a backend instance whose outage failed the run (to hold its rows)."""

    kind: DecisionKind
    detail: str = ""
    run_id: str | None = None
    public: str = ""
    backend_down: str | None = None


def decide(
    row: JobRow,
    run: RunFacts | None,
    now: datetime,
    grace: timedelta,
    stalled_after: timedelta | None = None,
    path: LaunchPath | None = None,
) -> Decision:
    """The action that brings ``row`` in line with ``run``.

    A started run with no event for ``stalled_after`` has lost its worker (Dagster's default
    run launcher cannot tell): it is marked failed so that run retries or this
    reconciliation can take over. ``path``: what the run launcher reaches now, to say in a
    queued row why its run has not started.
    """
    if row.status == "canceled":
        if run is not None and not run.finished:
            return Decision("cancel_run", run_id=run.run_id)
        return Decision("close_cancel")

    if run is None:
        last_change = row.updated_at or row.created_at or now
        if now - last_change < grace:
            return Decision("leave")
        return _lost(row, f"no run was started for claim {row.claims}", None)

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
    if not run.finished:
        return _waiting(row, run, path)
    if run.status == "FAILURE" and run.will_retry:
        return Decision("leave")
    if run.status == "SUCCESS":
        return Decision("finish", run_id=run.run_id)
    if run.status == "CANCELED":
        return Decision(
            "fail_refund",
            f"run {run.run_id} was canceled outside imagen.jobs",
            run.run_id,
            STOPPED_BY_OPERATOR,
        )
    fault = run.fault or "outage"
    if fault == "request":
        public = run.step_failure or SERVER_FAULT
        return Decision("fail", public, run.run_id, public)
    if fault == "server":
        detail = f"run {run.run_id} failed for a server-side reason: {run.step_failure}"
        return Decision("fail_refund", detail, run.run_id, run.step_failure or SERVER_FAULT)
    down = run.backend if run.failed_step and run.failed_step.startswith("generate") else None
    reason = f"run {run.run_id} ended {run.status} in an outage"
    if run.failed_step:
        reason += f" (step {run.failed_step})"
    return _lost(row, reason, run.run_id, down)


def _lost(row: JobRow, reason: str, run_id: str | None, down: str | None = None) -> Decision:
    """The row's run was lost to an outage: back to pending, or failed once it has been
    interrupted :data:`MAX_INTERRUPTIONS` times."""
    interruptions = row.interruptions + 1
    if interruptions >= MAX_INTERRUPTIONS:
        return Decision(
            "fail",
            f"{reason}; interrupted {interruptions} times, failing the job",
            run_id,
            INTERRUPTED_TOO_OFTEN.format(n=interruptions),
            down,
        )
    return Decision(
        "requeue_lost",
        f"{reason}; back to pending (interruption {interruptions} of {MAX_INTERRUPTIONS}, "
        "attempt given back)",
        run_id,
        RUN_LOST,
        down,
    )


def _waiting(row: JobRow, run: RunFacts, path: LaunchPath | None) -> Decision:
    """For a queued row whose run has not started: say why, when that changed."""
    if row.status != "queued":
        return Decision("leave")
    if run.status == "QUEUED":
        text = WAITING_FOR_SLOT
    elif path is not None and path.broker_error is not None:
        text = BROKER_DOWN
    elif path is not None and not path.serves(run.queue or path.default_queue):
        text = NO_WORKER
    elif run.status in ("STARTING", "NOT_STARTED"):
        text = WAITING_FOR_WORKER
    elif run.status == "STARTED":
        # The generate step takes the row when it starts: until then it waits for its pool.
        text = WAITING_FOR_SERVER
    else:
        return Decision("leave")
    if text == row.progress_text:
        return Decision("leave")
    return Decision("note_waiting", f"run {run.run_id} is {run.status}", run.run_id, text)

"""Reconciliation decisions for every row/run combination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagen_pipeline.queue.reconcile import RunFacts, decide
from imagen_pipeline.queue.rows import JobRow

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=2)


def row(
    status: str = "running", attempts: int = 1, age: timedelta = timedelta(minutes=10)
) -> JobRow:
    return JobRow(id=7, prompt="x", status=status, attempts=attempts, updated_at=NOW - age)


def run(status: str, **kwargs: object) -> RunFacts:
    return RunFacts(run_id="r1", status=status, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"])
def test_unfinished_runs_are_left_alone(status: str) -> None:
    assert decide(row(), run(status), NOW, GRACE, 3).kind == "leave"


def test_failed_run_that_dagster_will_retry_is_left_alone() -> None:
    assert decide(row(), run("FAILURE", will_retry=True), NOW, GRACE, 3).kind == "leave"


def test_success_finishes_the_row() -> None:
    decision = decide(row(), run("SUCCESS"), NOW, GRACE, 3)
    assert (decision.kind, decision.run_id) == ("finish", "r1")


def test_step_failure_fails_the_row_with_its_text() -> None:
    decision = decide(row(), run("FAILURE", step_failure="style: unknown style"), NOW, GRACE, 3)
    assert (decision.kind, decision.detail) == ("fail", "style: unknown style")


@pytest.mark.parametrize("status", ["FAILURE", "CANCELED"])
def test_crashed_or_canceled_run_is_requeued_then_failed(status: str) -> None:
    first = decide(row(attempts=1), run(status), NOW, GRACE, 3)
    assert first.kind == "requeue"
    assert first.detail.startswith(f"run r1 ended {status}; retrying")
    last = decide(row(attempts=3), run(status), NOW, GRACE, 3)
    assert last.kind == "fail"
    assert last.detail == f"run r1 ended {status} (after 3 attempts)"


def test_missing_run_waits_for_grace_then_requeues() -> None:
    assert (
        decide(row(status="queued", age=timedelta(seconds=30)), None, NOW, GRACE, 3).kind == "leave"
    )
    stale = decide(row(status="queued"), None, NOW, GRACE, 3)
    assert stale.kind == "requeue"
    assert "no run was started for attempt 1" in stale.detail


def test_canceled_row_stops_its_run_then_closes() -> None:
    assert decide(row(status="canceled"), run("STARTED"), NOW, GRACE, 3).kind == "cancel_run"
    assert decide(row(status="canceled"), run("CANCELED"), NOW, GRACE, 3).kind == "close_cancel"
    assert decide(row(status="canceled"), None, NOW, GRACE, 3).kind == "close_cancel"


def test_a_started_run_without_events_for_too_long_is_abandoned() -> None:
    stalled = timedelta(minutes=30)
    busy = decide(row(), run("STARTED", idle_s=60.0), NOW, GRACE, 3, stalled)
    gone = decide(row(), run("STARTED", idle_s=1800.0), NOW, GRACE, 3, stalled)
    assert busy.kind == "leave"
    assert (gone.kind, gone.run_id) == ("abandon_run", "r1")
    assert gone.detail == "run r1 made no progress for 1800 s; its worker is gone"


def test_idle_time_only_matters_for_started_runs() -> None:
    stalled = timedelta(seconds=10)
    decision = decide(row(), run("SUCCESS", idle_s=999.0), NOW, GRACE, 3, stalled)
    assert decision.kind == "finish"

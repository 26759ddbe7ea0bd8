"""Reconciliation decisions for every row/run combination."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from imagen_pipeline.queue.holds import (
    BROKER_DOWN,
    NO_WORKER,
    RUN_LOST,
    WAITING_FOR_SERVER,
    WAITING_FOR_SLOT,
    WAITING_FOR_WORKER,
    LaunchPath,
)
from imagen_pipeline.queue.reconcile import STOPPED_BY_OPERATOR, Decision, RunFacts, decide
from imagen_pipeline.queue.rows import MAX_INTERRUPTIONS, JobRow

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=2)
RUN_ID = "3fd45f58-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def row(
    status: str = "running",
    attempts: int = 1,
    age: timedelta = timedelta(minutes=10),
    interruptions: int = 0,
    progress_text: str | None = None,
) -> JobRow:
    return JobRow(
        id=7,
        prompt="x",
        status=status,
        attempts=attempts,
        claims=attempts + interruptions,
        interruptions=interruptions,
        progress_text=progress_text,
        updated_at=NOW - age,
    )


def run(status: str, **kwargs: object) -> RunFacts:
    return RunFacts(run_id=RUN_ID, status=status, **kwargs)  # type: ignore[arg-type]


def decide_for(job: JobRow, facts: RunFacts | None, path: LaunchPath | None = None) -> Decision:
    return decide(job, facts, NOW, GRACE, timedelta(minutes=30), path)


def assert_public(decision: Decision) -> None:
    """What the row's owner reads names no run, host or class."""
    assert RUN_ID not in decision.public
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}|@|Error\b|127\.0\.0\.1", decision.public)


@pytest.mark.parametrize("status", ["NOT_STARTED", "STARTING", "STARTED", "CANCELING"])
def test_unfinished_runs_of_running_rows_are_left_alone(status: str) -> None:
    assert decide_for(row(), run(status)).kind == "leave"


def test_failed_run_that_dagster_will_retry_is_left_alone() -> None:
    assert decide_for(row(), run("FAILURE", will_retry=True, fault="outage")).kind == "leave"


def test_success_finishes_the_row() -> None:
    decision = decide_for(row(), run("SUCCESS"))
    assert (decision.kind, decision.run_id) == ("finish", RUN_ID)


def test_a_failure_of_the_request_fails_the_row_and_counts() -> None:
    decision = decide_for(
        row(), run("FAILURE", step_failure="style: unknown style", fault="request")
    )
    assert (decision.kind, decision.public) == ("fail", "style: unknown style")


def test_a_failure_of_the_server_fails_the_row_and_gives_the_attempt_back() -> None:
    public = "the server is not set up for this request; the operators can see the details"
    decision = decide_for(row(), run("FAILURE", step_failure=public, fault="server"))
    assert (decision.kind, decision.public) == ("fail_refund", public)
    assert RUN_ID in decision.detail


@pytest.mark.parametrize(
    ("facts", "down"),
    [
        (run("FAILURE", fault="outage"), None),
        (run("FAILURE"), None),
        (
            run(
                "FAILURE",
                fault="outage",
                failed_step="generate_gpu",
                backend="flux",
                step_failure="the image backend did not answer",
            ),
            "flux",
        ),
        (run("FAILURE", fault="outage", failed_step="store_image", backend="flux"), None),
    ],
)
def test_a_run_lost_to_an_outage_sends_the_row_back_without_counting(
    facts: RunFacts, down: str | None
) -> None:
    decision = decide_for(row(attempts=3), facts)
    assert (decision.kind, decision.public, decision.backend_down) == (
        "requeue_lost",
        RUN_LOST,
        down,
    )
    assert_public(decision)
    assert RUN_ID in decision.detail


def test_a_row_interrupted_too_often_fails() -> None:
    decision = decide_for(row(interruptions=MAX_INTERRUPTIONS - 1), run("FAILURE"))
    assert decision.kind == "fail"
    assert decision.public == (
        f"the server was interrupted {MAX_INTERRUPTIONS} times while working on this job; "
        "retry it later"
    )


def test_a_run_canceled_outside_the_queue_fails_the_row_without_counting() -> None:
    decision = decide_for(row(), run("CANCELED"))
    assert (decision.kind, decision.public) == ("fail_refund", STOPPED_BY_OPERATOR)


def test_missing_run_waits_for_grace_then_goes_back_to_pending() -> None:
    assert decide_for(row(status="queued", age=timedelta(seconds=30)), None).kind == "leave"
    stale = decide_for(row(status="queued"), None)
    assert (stale.kind, stale.public) == ("requeue_lost", RUN_LOST)
    assert "no run was started for claim 1" in stale.detail


def test_canceled_row_stops_its_run_then_closes() -> None:
    assert decide_for(row(status="canceled"), run("STARTED")).kind == "cancel_run"
    assert decide_for(row(status="canceled"), run("CANCELED")).kind == "close_cancel"
    assert decide_for(row(status="canceled"), None).kind == "close_cancel"


def test_a_started_run_without_events_for_too_long_is_abandoned() -> None:
    busy = decide_for(row(), run("STARTED", idle_s=60.0))
    gone = decide_for(row(), run("STARTED", idle_s=1800.0))
    assert busy.kind == "leave"
    assert (gone.kind, gone.run_id) == ("abandon_run", RUN_ID)
    assert gone.detail == f"run {RUN_ID} made no progress for 1800 s; its worker is gone"


def test_idle_time_only_matters_for_started_runs() -> None:
    assert decide_for(row(), run("SUCCESS", idle_s=999.0)).kind == "finish"


@pytest.mark.parametrize(
    ("facts", "path", "text"),
    [
        (run("QUEUED"), None, WAITING_FOR_SLOT),
        (run("STARTING"), None, WAITING_FOR_WORKER),
        (run("STARTED"), None, WAITING_FOR_SERVER),
        (
            run("STARTING"),
            LaunchPath(broker_error="Error 111", default_queue="dagster"),
            BROKER_DOWN,
        ),
        (
            run("STARTING", queue="imagen_gpu"),
            LaunchPath(workers={"dagster": 4}, default_queue="dagster"),
            NO_WORKER,
        ),
        (
            run("STARTING"),
            LaunchPath(workers={"dagster": 4}, default_queue="dagster"),
            WAITING_FOR_WORKER,
        ),
    ],
)
def test_a_queued_row_says_why_its_run_has_not_started(
    facts: RunFacts, path: LaunchPath | None, text: str
) -> None:
    decision = decide_for(row(status="queued"), facts, path)
    assert (decision.kind, decision.public) == ("note_waiting", text)
    assert_public(decision)
    assert decide_for(row(status="queued", progress_text=text), facts, path).kind == "leave"

"""The NOTIFY fast path on real Postgres: claims, submissions, released claims, the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from imagen_pipeline.defs.run_submission import GraphQLRunSubmitter
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.setup import Setup, load_setup
from imagen_pipeline.queue.listener import RELEASED, handle_notification, listen
from imagen_pipeline.queue.rows import JobRow
from imagen_pipeline_tests.fakes.loopback_http import closed_port


class RecordingSubmitter:
    """A run submitter that records what it was asked to launch (or fails like a down server)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.submitted: list[tuple[JobRow, GenerationPlan]] = []
        self.error = error
        self.arrived = threading.Event()

    def submit(self, row: JobRow, plan: GenerationPlan) -> str:
        if self.error is not None:
            raise self.error
        self.submitted.append((row, plan))
        self.arrived.set()
        return f"run-{row.id}"


@pytest.fixture
def config_loader(write_config: Callable[..., Path]) -> Callable[[], Setup]:
    path = write_config({"backends": {"mock": {"type": "mock"}}})
    return lambda: load_setup(str(path))


def insert(url: str, **fields: Any) -> int:
    values = {"prompt": "a lighthouse", **fields}
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"INSERT INTO imagen.jobs ({', '.join(values)}) "
            f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id",
            list(values.values()),
        ).fetchone()
    assert row is not None
    return int(row[0])


def job(url: str, job_id: int) -> dict[str, Any]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM imagen.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def test_a_notification_claims_the_row_and_submits_its_run(
    migrated_database_url: str, config_loader: Callable[[], Setup]
) -> None:
    job_id = insert(migrated_database_url, style="photo")
    submitter = RecordingSubmitter()
    with psycopg.connect(migrated_database_url) as conn:
        outcome = handle_notification(conn, str(job_id), config_loader, submitter)
        again = handle_notification(conn, str(job_id), config_loader, submitter)
    assert outcome == f"row {job_id}: submitted run run-{job_id} (claim 1)"
    assert again == f"row {job_id} already claimed or not pending"
    [(row, plan)] = submitter.submitted
    assert (row.id, row.attempts, plan.request.style, plan.backend) == (job_id, 1, "photo", "mock")
    assert job(migrated_database_url, job_id)["status"] == "queued"


def test_a_failed_submission_releases_the_claim_for_the_sensor(
    migrated_database_url: str, config_loader: Callable[[], Setup]
) -> None:
    job_id = insert(migrated_database_url)
    submitter = RecordingSubmitter(ConnectionError("webserver refused the connection"))
    with psycopg.connect(migrated_database_url) as conn:
        outcome = handle_notification(conn, str(job_id), config_loader, submitter)
    assert "run submission failed, left for the sensor" in outcome
    assert "ConnectionError: webserver refused the connection" in outcome
    row = job(migrated_database_url, job_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert row["error"] == RELEASED


def test_a_submission_to_a_webserver_that_went_away_is_one_line_naming_it(
    migrated_database_url: str, config_loader: Callable[[], Setup]
) -> None:
    job_id = insert(migrated_database_url)
    url = f"http://127.0.0.1:{closed_port()}"
    with psycopg.connect(migrated_database_url) as conn:
        outcome = handle_notification(conn, str(job_id), config_loader, GraphQLRunSubmitter(url))
    assert outcome == (
        f"row {job_id}: run submission failed, left for the sensor: the Dagster webserver at "
        f"{url} did not answer (connection refused)"
    )
    row = job(migrated_database_url, job_id)
    assert (row["status"], row["attempts"], row["error"]) == ("pending", 0, RELEASED)


def test_an_invalid_row_fails_with_its_reason_and_launches_nothing(
    migrated_database_url: str, config_loader: Callable[[], Setup]
) -> None:
    job_id = insert(migrated_database_url, style="vaporwave")
    submitter = RecordingSubmitter()
    with psycopg.connect(migrated_database_url) as conn:
        handle_notification(conn, str(job_id), config_loader, submitter)
    row = job(migrated_database_url, job_id)
    assert row["status"] == "failed"
    assert row["error"].startswith("style: unknown style 'vaporwave'; known styles: ")
    assert submitter.submitted == []


def test_a_garbage_payload_is_ignored(
    migrated_database_url: str, config_loader: Callable[[], Setup]
) -> None:
    with psycopg.connect(migrated_database_url) as conn:
        outcome = handle_notification(conn, "hello", config_loader, RecordingSubmitter())
    assert outcome == "ignored notification 'hello' (not a job id)"


def test_the_loop_launches_rows_inserted_while_it_listens(
    migrated_database_url: str, config_loader: Callable[[], Setup]
) -> None:
    submitter = RecordingSubmitter()
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=listen,
        args=(migrated_database_url, config_loader, submitter, stop, ready.set),
        daemon=True,
    )
    thread.start()
    try:
        assert ready.wait(30), "listener did not start"
        job_id = insert(migrated_database_url)
        assert submitter.arrived.wait(30), "no run submitted for the inserted row"
    finally:
        stop.set()
        thread.join(10)
    assert [row.id for row, _ in submitter.submitted] == [job_id]
    assert not thread.is_alive()

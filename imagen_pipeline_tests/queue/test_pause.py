"""Pausing the queue on real Postgres: the claim itself takes nothing (sensor and listener
alike), the state outlives the process that set it, the CLI and the sensor say so. The same
through a real daemon is in test_queue_daemon.py (its module's running stack)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from imagen_pipeline.cli.main import cli
from imagen_pipeline.doctor.databases import check_holds
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.setup import load_setup
from imagen_pipeline.queue import pause, repository
from imagen_pipeline.queue.listener import handle_notification
from imagen_pipeline.queue.rows import JobRow
from imagen_pipeline_tests.fixtures.imagen import subprocess_env
from imagen_pipeline_tests.fixtures.queue import sensor_tick


class RecordingSubmitter:
    """A run submitter that records the rows it was asked to launch."""

    def __init__(self) -> None:
        self.submitted: list[JobRow] = []

    def submit(self, row: JobRow, plan: GenerationPlan) -> str:
        self.submitted.append(row)
        return f"run-{row.id}"


def insert(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO imagen.jobs (prompt) VALUES ('a lighthouse') RETURNING id"
        ).fetchone()
    assert row is not None
    return int(row[0])


def job(url: str, job_id: int) -> dict[str, Any]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM imagen.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def test_while_paused_no_claim_takes_a_row_and_resume_gives_them_back(
    migrated_database_url: str, write_config: Callable[..., Path]
) -> None:
    url = migrated_database_url
    config = write_config({"backends": {"mock": {"type": "mock"}}})
    first, second = insert(url), insert(url)
    with psycopg.connect(url) as conn:
        [running] = repository.claim_pending(conn, 1, None, "mock")
        outcome = pause.pause(conn, "  GPU maintenance until 18:00 ", "op@box")
        assert outcome.line() == (
            "paused the imagen.jobs queue (reason: GPU maintenance until 18:00): nothing new "
            "is claimed; 0 running and 1 queued jobs finish, 1 pending jobs wait"
        )
        assert repository.claim_pending(conn, 50, None, "mock") == []
        assert repository.claim_job(conn, second, None, "mock") is None
        submitter = RecordingSubmitter()
        said = handle_notification(conn, str(second), lambda: load_setup(str(config)), submitter)
        assert said.startswith(f"row {second} waits: the queue is paused since ")
        assert said.endswith(" by op@box: GPU maintenance until 18:00")
        assert submitter.submitted == []
        # The job claimed before the pause still runs to its end.
        assert repository.take_ownership(conn, first, running.claims, "run-1", None).owned
        assert repository.finish(conn, first, "run-1", None)
        again = pause.pause(conn, None, "someone@else")
        assert again.line().startswith("the imagen.jobs queue was already paused since ")
        assert " by op@box; reason now: none;" in again.line()
    assert job(url, second)["status"] == "pending"
    assert job(url, first)["status"] == "done"

    with psycopg.connect(url) as conn:
        resumed = pause.resume(conn)
        assert resumed.line().startswith("resumed the imagen.jobs queue (paused since ")
        assert resumed.line().endswith(
            ": 1 pending jobs are claimed from the next sensor tick; 0 running, 0 queued"
        )
        assert pause.resume(conn).line() == (
            "the imagen.jobs queue is not paused; nothing changed (1 pending, 0 running, 0 queued)"
        )
        assert [row.id for row in repository.claim_pending(conn, 50, None, "mock")] == [second]


def test_the_pause_outlives_the_process_and_the_sensor_and_doctor_say_why(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = migrated_database_url
    config = write_config({"backends": {"mock": {"type": "mock"}}})
    paused = CliRunner().invoke(cli, ["queue", "pause", "--reason", "new GPU", "--dsn", url])
    assert (paused.exit_code, paused.output) == (
        0,
        "paused the imagen.jobs queue (reason: new GPU): nothing new is claimed; 0 running "
        "and 0 queued jobs finish, 0 pending jobs wait\n",
    )
    job_id = insert(url)
    result = sensor_tick(dagster_instance, config)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.skip_reason is not None
    assert result.skip_reason.skip_message.startswith("the imagen.jobs queue is paused since ")
    assert result.skip_reason.skip_message.endswith(
        ": new GPU; pending jobs wait until imagen queue resume"
    )
    assert job(url, job_id)["status"] == "pending"

    monkeypatch.setenv("IMAGEN_DATABASE_URL", url)
    [holds, warning] = check_holds()
    assert (holds.check, warning.check, warning.status) == ("holds", "pause", "warn")
    assert warning.detail.startswith("the imagen.jobs queue is paused since ")
    assert warning.detail.endswith(": new GPU") and warning.hint == "imagen queue resume"

    # Another process, as after a restart, finds the pause where the first one left it.
    resumed = subprocess.run(
        ["imagen", "queue", "resume"],
        env=subprocess_env(IMAGEN_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("resumed the imagen.jobs queue (paused since ")
    assert ": new GPU): 1 pending jobs are claimed from the next sensor tick;" in resumed.stdout
    [request] = list(sensor_tick(dagster_instance, config).run_requests or [])
    assert request.tags["imagen/job_id"] == str(job_id)
    assert check_holds()[1:] == []


def test_a_reason_too_long_or_with_control_characters_is_refused_by_name(
    migrated_database_url: str,
) -> None:
    runner = CliRunner()
    url = migrated_database_url
    long = runner.invoke(cli, ["queue", "pause", "--reason", "x" * 201, "--dsn", url])
    assert (long.exit_code, long.output) == (
        2,
        "imagen: error: reason: at most 200 characters (got 201)\n",
    )
    multi = runner.invoke(cli, ["queue", "pause", "--reason", "a\nb", "--dsn", url])
    assert multi.output == "imagen: error: reason: must be one line without control characters\n"
    with psycopg.connect(url) as conn:
        assert not pause.current(conn).paused
        with pytest.raises(psycopg.errors.CheckViolation, match="queue_state_reason_check"):
            conn.execute("UPDATE imagen.queue_state SET reason = repeat('x', 201)")

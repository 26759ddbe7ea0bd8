"""Retrying a failed job (``imagen queue retry``, or a web client's UPDATE) on real Postgres.

A job that failed after its image was generated is retried into exactly one backend call,
one file and one ``imagen.images`` row: the retried run re-uses the image on disk.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from imagen_pipeline.cli.main import cli
from imagen_pipeline.generate.job_records import job_record_path
from imagen_pipeline.queue.rows import MAX_ATTEMPTS
from imagen_pipeline_tests.fixtures.queue import deployed_job, run_requests, web_session

OWNER = "0d0d0d0d-0000-4000-8000-00000000000d"


def sql(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


class Queue:
    """One job's way through the queue: sensor ticks and the runs they request."""

    def __init__(self, url: str, config_file: Path, instance: dg.DagsterInstance) -> None:
        self.url = url
        self.config_file = config_file
        self.instance = instance

    def tick(self) -> list[dg.RunRequest]:
        return run_requests(self.instance, self.config_file)

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return deployed_job().execute_in_process(
            run_config=request.run_config,
            tags=request.tags,
            instance=self.instance,
            raise_on_error=False,
        )

    def row(self, job_id: int) -> dict[str, Any]:
        [row] = sql(self.url, "SELECT * FROM imagen.jobs WHERE id = %s", (job_id,))
        return row


@pytest.fixture
def blocked_output(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Queue:
    """A config whose output folder cannot be created yet: write_files fails after the
    backend was called (a file stands where the folder should be)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "blocked").write_text("a file where a folder should be")
    config_file = write_config(
        {
            "backends": {"mock": {"type": "mock", "calls_log": str(tmp_path / "calls.jsonl")}},
            "output": {"directory": str(out), "naming": "blocked/{slug}"},
        }
    )
    monkeypatch.setenv("IMAGEN_CONFIG", str(config_file))
    return Queue(migrated_database_url, config_file, dagster_instance)


def backend_calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def insert_job(url: str) -> int:
    [row] = sql(
        url,
        "INSERT INTO imagen.jobs (owner_user_id, prompt, width, height) "
        "VALUES (%s, 'a heron in the reeds', 64, 64) RETURNING id",
        (OWNER,),
    )
    return int(row["id"])


def fail_after_generation(queue: Queue) -> tuple[int, str]:
    """A job whose first run generated the image and then failed in write_files."""
    job_id = insert_job(queue.url)
    [request] = queue.tick()
    first = queue.run(request)
    assert not first.success
    queue.tick()
    row = queue.row(job_id)
    # The server's fault, not the request's: the attempt is given back.
    assert (row["status"], row["attempts"], row["claims"]) == ("failed", 0, 1)
    assert row["error"].startswith("the server could not save the image; ")
    return job_id, first.run_id


def test_imagen_queue_retry_reuses_the_generated_image(
    blocked_output: Queue, tmp_path: Path
) -> None:
    job_id, first_run_id = fail_after_generation(blocked_output)
    record = job_record_path(tmp_path / "out", job_id)
    assert record.is_file()

    result = CliRunner().invoke(cli, ["queue", "retry", str(job_id)])
    assert result.exit_code == 0, result.output
    assert f"imagen.jobs row {job_id} is pending again (attempt 1 of 3 comes next)" in (
        result.output
    )
    (tmp_path / "out" / "blocked").unlink()
    [request] = blocked_output.tick()
    assert request.tags["imagen/job_attempt"] == "2"
    second = blocked_output.run(request)
    assert second.success

    assert len(backend_calls(tmp_path)) == 1, "the retried run must not call the backend again"
    pngs = sorted((tmp_path / "out").rglob("*.png"))
    assert [p.parent.name for p in pngs] == ["blocked"], pngs
    [image] = sql(blocked_output.url, "SELECT * FROM imagen.images")
    assert image["run_id"] == first_run_id, "the image row names the run that generated it"
    assert image["metadata"]["written_by_run_id"] == second.run_id
    assert len(sql(blocked_output.url, "SELECT * FROM mai.imagen_usage")) == 1
    row = blocked_output.row(job_id)
    assert (row["status"], row["image_id"], row["run_id"]) == ("done", image["id"], second.run_id)
    assert not record.exists(), "a done job's record is removed"


def test_a_client_retry_with_nothing_to_reuse_generates_afresh(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    log = tmp_path / "calls.jsonl"
    refusing = write_config(
        {"backends": {"mock": {"type": "mock", "fail_permanent": "no", "calls_log": str(log)}}}
    )
    monkeypatch.setenv("IMAGEN_CONFIG", str(refusing))
    queue = Queue(migrated_database_url, refusing, dagster_instance)
    job_id = insert_job(migrated_database_url)
    [request] = queue.tick()
    assert not queue.run(request).success
    queue.tick()
    assert queue.row(job_id)["error"] == "mock backend rejected the request: no"

    with web_session(migrated_database_url, OWNER) as cursor:
        cursor.execute("UPDATE imagen.jobs SET status = 'pending' WHERE id = %s", (job_id,))
    # The backend takes the request now (the same imagen.yaml, edited).
    write_config({"backends": {"mock": {"type": "mock", "calls_log": str(log)}}})
    [request] = queue.tick()
    assert queue.run(request).success
    assert len(backend_calls(tmp_path)) == 2, "nothing was generated the first time"
    assert queue.row(job_id)["status"] == "done"
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_retry_refuses_jobs_that_are_not_failed_or_out_of_attempts(
    migrated_database_url: str,
) -> None:
    rows = sql(
        migrated_database_url,
        "INSERT INTO imagen.jobs (prompt, status, attempts) VALUES "
        "('a', 'done', 1), ('b', 'failed', %s) RETURNING id",
        (MAX_ATTEMPTS,),
    )
    done, exhausted = (row["id"] for row in rows)
    result = CliRunner().invoke(cli, ["queue", "retry", str(done), str(exhausted), "999999"])
    assert result.exit_code == 1
    assert f"imagen.jobs row {done} is done; only a failed or canceled job is retried" in (
        result.output
    )
    assert f"imagen.jobs row {exhausted} has used all 3 attempts" in result.output
    assert "imagen.jobs row 999999 does not exist" in result.output
    assert "3 of 3 jobs not retried" in result.output


def test_housekeeping_sweeps_a_failed_jobs_staging_only_after_the_staging_age(
    blocked_output: Queue, tmp_path: Path
) -> None:
    """A failed job keeps its staged image for a retry; once it ended longer ago than
    ``retention.staging``, ``imagen housekeeping`` sweeps it, and an unreferenced staged
    image goes once its file is that old. Final images stay."""
    old_job, _ = fail_after_generation(blocked_output)
    recent_job, _ = fail_after_generation(blocked_output)
    staging = tmp_path / "out" / ".imagen-staging"
    old_record = job_record_path(tmp_path / "out", old_job)
    recent_record = job_record_path(tmp_path / "out", recent_job)
    old_image = Path(json.loads(old_record.read_text())["generated"]["staged_path"])
    recent_image = Path(json.loads(recent_record.read_text())["generated"]["staged_path"])
    assert old_image.is_file() and recent_image.is_file()
    sql(
        blocked_output.url,
        "UPDATE imagen.jobs SET finished_at = now() - interval '20 days' WHERE id = %s",
        (old_job,),
    )
    orphan_old, orphan_new = staging / "orphan-old.png", staging / "orphan-new.png"
    orphan_old.write_bytes(b"x" * 10)
    orphan_new.write_bytes(b"y" * 10)
    twenty_days_ago = time.time() - 20 * 86400
    os.utime(orphan_old, (twenty_days_ago, twenty_days_ago))
    os.utime(old_image, (twenty_days_ago, twenty_days_ago))
    final_pngs = sorted((tmp_path / "out").glob("*.png"))

    dry = CliRunner().invoke(cli, ["housekeeping", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would delete" in dry.output and "1 job records and 2 staged images" in dry.output
    assert old_record.exists() and orphan_old.exists()

    result = CliRunner().invoke(cli, ["housekeeping"])
    assert result.exit_code == 0, result.output
    assert "1 job records and 2 staged images" in result.output
    assert not old_record.exists() and not old_image.exists() and not orphan_old.exists()
    assert recent_record.is_file() and recent_image.is_file() and orphan_new.is_file()
    assert sorted((tmp_path / "out").glob("*.png")) == final_pngs

"""``imagen_jobs_sensor`` ticks evaluated with ``build_sensor_context`` on real Postgres."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from psycopg.rows import dict_row

from imagen_pipeline.defs.sensors import (
    CLAIM_BATCH,
    RECONCILE_BATCH,
    QueueCursor,
    build_imagen_jobs_sensor,
    sensor_interval_s,
)
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.queue.rows import MAX_INTERRUPTIONS
from imagen_pipeline_tests.fixtures.daemon import holding
from imagen_pipeline_tests.fixtures.imagen import subprocess_env
from imagen_pipeline_tests.fixtures.queue import (
    deployed_job,
    reconstructable_job,
    run_requests,
    sensor_tick,
)

OWNER = "00000000-0000-4000-8000-0000000000c1"
Tick = Callable[..., dg.SensorResult | dg.SkipReason]


@pytest.fixture
def config_file(write_config: Callable[..., Path]) -> Path:
    """No per-owner limit: these tests are about batches (test_fair_queue.py covers it)."""
    return write_config(
        {"backends": {"mock": {"type": "mock"}}, "queue": {"max_in_flight_per_owner": None}}
    )


@pytest.fixture
def tick(
    config_file: Path, dagster_instance: dg.DagsterInstance
) -> Callable[..., dg.SensorResult | dg.SkipReason]:
    """Evaluate one sensor tick with the given cursor."""

    def evaluate(cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
        return sensor_tick(dagster_instance, config_file, cursor)

    return evaluate


def sql(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def insert_jobs(url: str, count: int, **fields: Any) -> list[int]:
    values = {"owner_user_id": OWNER, "prompt": "a lighthouse", **fields}
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({k})s" for k in values)
    rows = sql(
        url,
        f"INSERT INTO imagen.jobs ({columns}) SELECT {placeholders} "
        f"FROM generate_series(1, {count}) RETURNING id",
        values,
    )
    return sorted(row["id"] for row in rows)


def statuses(url: str) -> dict[int, str]:
    return {r["id"]: r["status"] for r in sql(url, "SELECT id, status FROM imagen.jobs")}


def requests_of(result: dg.SensorResult | dg.SkipReason) -> list[dg.RunRequest]:
    assert isinstance(result, dg.SensorResult)
    return list(result.run_requests or [])


def test_pending_rows_become_one_run_request_each(migrated_database_url: str, tick: Tick) -> None:
    [job_id] = insert_jobs(
        migrated_database_url,
        1,
        prompt="a lighthouse",
        style="watercolor",
        seed=7,
        width=512,
        height=384,
    )
    [request] = requests_of(tick())
    assert request.run_key == f"imagen-job-{job_id}-1"
    assert request.tags == {
        "imagen/job_id": str(job_id),
        "imagen/job_attempt": "1",
        "imagen/backend": "mock",
        "imagen/style": "watercolor",
        "imagen/pool": "imagen_cloud",
        "imagen/source": "imagen.jobs",
        "imagen/owner": OWNER,
    }
    config = request.run_config["ops"]["enrich_prompt"]["config"]
    assert (config["prompt"], config["style"], config["seed"]) == ("a lighthouse", "watercolor", 7)
    assert (config["width"], config["height"], config["job_id"]) == (512, 384, job_id)
    row = sql(migrated_database_url, "SELECT status, attempts FROM imagen.jobs")[0]
    assert row == {"status": "queued", "attempts": 1}
    again = tick()
    assert requests_of(again) == []


def test_a_tick_claims_a_bounded_batch_oldest_first(migrated_database_url: str, tick: Tick) -> None:
    ids = insert_jobs(migrated_database_url, 10_000)
    first = requests_of(tick())
    assert [r.run_key for r in first] == [f"imagen-job-{i}-1" for i in ids[:CLAIM_BATCH]]
    second = requests_of(tick())
    assert [r.tags["imagen/job_id"] for r in second] == [
        str(i) for i in ids[CLAIM_BATCH : 2 * CLAIM_BATCH]
    ]
    counts = sql(
        migrated_database_url, "SELECT status, count(*) AS n FROM imagen.jobs GROUP BY status"
    )
    assert {r["status"]: r["n"] for r in counts} == {
        "queued": 2 * CLAIM_BATCH,
        "pending": 10_000 - 2 * CLAIM_BATCH,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"style": "vaporwave"}, "style: unknown style 'vaporwave'; known styles: "),
        (
            {"backend": "dalle9"},
            "backend: 'dalle9' is not a backend this server offers; leave it empty for the default",
        ),
        ({"prompt": " \t "}, "prompt: must not be empty"),
    ],
)
def test_an_invalid_row_fails_with_the_reason_and_gets_no_run(
    migrated_database_url: str, tick: Tick, fields: dict[str, Any], message: str
) -> None:
    [bad] = insert_jobs(migrated_database_url, 1, **fields)
    [good] = insert_jobs(migrated_database_url, 1)
    requests = requests_of(tick())
    assert [r.tags["imagen/job_id"] for r in requests] == [str(good)]
    row = sql(migrated_database_url, "SELECT status, error FROM imagen.jobs WHERE id = %s", (bad,))
    assert row[0]["status"] == "failed"
    assert row[0]["error"].startswith(message)
    assert "imagen.yaml" not in row[0]["error"] and "mock" not in row[0]["error"]


def test_without_a_database_the_sensor_skips_and_says_why(tick: Tick) -> None:
    result = tick()
    assert isinstance(result, dg.SkipReason)
    assert "IMAGEN_DATABASE_URL is not set" in (result.skip_message or "")


def test_an_idle_queue_skips_and_keeps_a_cursor(migrated_database_url: str, tick: Tick) -> None:
    result = tick()
    assert isinstance(result, dg.SensorResult)
    assert result.run_requests == [] or result.run_requests is None
    assert result.skip_reason is not None
    assert QueueCursor.parse(result.cursor) == QueueCursor(reconcile_after=0)


def test_a_requested_run_executed_as_launched_marks_its_row_done(
    migrated_database_url: str, tick: Tick, dagster_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(migrated_database_url, 1, width=128, height=96)
    [request] = requests_of(tick())
    result = deployed_job().execute_in_process(
        run_config=request.run_config, tags=request.tags, instance=dagster_instance
    )
    assert result.success
    row = sql(migrated_database_url, "SELECT * FROM imagen.jobs WHERE id = %s", (job_id,))[0]
    image = sql(migrated_database_url, "SELECT * FROM imagen.images")[0]
    assert (row["status"], row["run_id"], row["image_id"]) == ("done", result.run_id, image["id"])
    assert Path(image["metadata"]["local_path"]).is_file()
    tick()
    assert statuses(migrated_database_url) == {job_id: "done"}


def _age_rows(url: str, minutes: int) -> None:
    """Backdate updated_at past the sensor's grace period (bypassing the touch trigger), and
    let a row sent back after an outage be claimed at once."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE imagen.jobs SET updated_at = now() - make_interval(mins => %s), "
            "retry_at = NULL",
            (minutes,),
        )


def test_a_claimed_row_whose_run_never_started_goes_back_without_spending_attempts(
    migrated_database_url: str, tick: Tick
) -> None:
    [job_id] = insert_jobs(migrated_database_url, 1)
    requests_of(tick())
    assert statuses(migrated_database_url) == {job_id: "queued"}
    tick()
    assert statuses(migrated_database_url) == {job_id: "queued"}, "within grace: left alone"
    for interruption in range(1, MAX_INTERRUPTIONS):
        _age_rows(migrated_database_url, 10)
        tick()  # reconciles: back to pending, not claimed again before its retry_at
        row = sql(migrated_database_url, "SELECT * FROM imagen.jobs")[0]
        assert (row["status"], row["attempts"], row["interruptions"], row["error"]) == (
            "pending",
            0,
            interruption,
            None,
        )
        assert row["retry_at"] is not None
        _age_rows(migrated_database_url, 10)
        tick()  # its pause is over: claimed again
        assert statuses(migrated_database_url) == {job_id: "queued"}
    _age_rows(migrated_database_url, 10)
    tick()
    row = sql(migrated_database_url, "SELECT status, error FROM imagen.jobs")[0]
    assert row["status"] == "failed"
    assert row["error"] == (
        f"the server was interrupted {MAX_INTERRUPTIONS} times while working on this job; "
        "retry it later"
    )


def test_a_canceled_row_without_a_run_is_closed(migrated_database_url: str, tick: Tick) -> None:
    [job_id] = insert_jobs(migrated_database_url, 1, status="canceled")
    tick()
    row = sql(migrated_database_url, "SELECT status, finished_at FROM imagen.jobs")[0]
    assert row["status"] == "canceled" and row["finished_at"] is not None
    assert statuses(migrated_database_url) == {job_id: "canceled"}


def test_reconciliation_walks_unsettled_rows_in_bounded_batches(
    migrated_database_url: str, tick: Tick
) -> None:
    ids = insert_jobs(migrated_database_url, RECONCILE_BATCH + 30, status="running")
    first = tick()
    assert isinstance(first, dg.SensorResult)
    assert QueueCursor.parse(first.cursor).reconcile_after == ids[RECONCILE_BATCH - 1]
    second = tick(first.cursor)
    assert isinstance(second, dg.SensorResult)
    assert QueueCursor.parse(second.cursor).reconcile_after == 0
    assert QueueCursor.parse("not json") == QueueCursor()


def test_the_interval_comes_from_the_environment_with_a_clear_error() -> None:
    assert sensor_interval_s({}) == 1
    assert sensor_interval_s({"IMAGEN_SENSOR_INTERVAL_S": "2"}) == 2
    assert build_imagen_jobs_sensor(2).minimum_interval_seconds == 2
    with pytest.raises(ConfigError, match=r"IMAGEN_SENSOR_INTERVAL_S: must be whole seconds"):
        sensor_interval_s({"IMAGEN_SENSOR_INTERVAL_S": "0.5"})


def test_a_reexecution_from_failure_keeps_its_row_and_ends_done_with_one_image(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Through the Dagster API, as the UI does it: the re-execution carries no job tags of its
    own, takes the row over from its parent, and the sensor leaves it alone while it runs."""
    # The test holds the backend's gate while it ticks during the re-execution; the first
    # run fails because a file stands where the backend's log folder should be.
    (tmp_path / "logs").write_text("not a folder")
    log = tmp_path / "logs" / "calls.jsonl"
    gate = tmp_path / "gate.lock"
    mock = {"type": "mock", "serial_lock": str(gate), "calls_log": str(log)}
    config = {"backends": {"mock": mock}}
    monkeypatch.setenv("IMAGEN_CONFIG", str(write_config(config)))

    def tick() -> None:
        run_requests(dagster_instance)

    [job_id] = insert_jobs(migrated_database_url, 1, width=64, height=64)
    [request] = run_requests(dagster_instance)
    job = reconstructable_job()
    with dg.execute_job(
        job, dagster_instance, run_config=request.run_config, tags=request.tags
    ) as parent:
        assert not parent.success
    tick()
    row = sql(migrated_database_url, "SELECT * FROM imagen.jobs")[0]
    assert (row["status"], row["run_id"]) == ("failed", parent.run_id)

    (tmp_path / "logs").unlink()
    options = dg.ReexecutionOptions.from_failure(parent.run_id, dagster_instance)
    outcome: dict[str, Any] = {}

    def reexecute() -> None:
        with dg.execute_job(job, dagster_instance, reexecution_options=options) as result:
            outcome["success"], outcome["run_id"] = result.success, result.run_id

    worker = threading.Thread(target=reexecute)
    try:
        with holding(gate):
            worker.start()
            deadline = time.monotonic() + 60
            while not (log.exists() and log.read_text()):
                assert time.monotonic() < deadline, "the re-execution never called the backend"
                time.sleep(0.05)
            owned = sql(migrated_database_url, "SELECT * FROM imagen.jobs")[0]
            assert owned["status"] == "running" and owned["run_id"] != parent.run_id
            tick()
            tick()
            during = sql(migrated_database_url, "SELECT * FROM imagen.jobs")[0]
            assert (during["status"], during["run_id"]) == ("running", owned["run_id"])
    finally:
        worker.join(120)
    assert outcome == {"success": True, "run_id": owned["run_id"]}
    tick()
    row = sql(migrated_database_url, "SELECT * FROM imagen.jobs")[0]
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert (row["status"], row["run_id"], row["image_id"]) == ("done", owned["run_id"], image["id"])
    assert len(log.read_text().splitlines()) == 1
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    reexecution = dagster_instance.get_run_by_id(owned["run_id"])
    assert reexecution is not None and reexecution.parent_run_id == parent.run_id
    assert reexecution.tags["imagen/job_id"] == str(job_id), "found by the job's tag from now on"


def test_a_done_row_passes_to_a_rerun_recording_step_but_never_to_a_second_generation(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """What run retries do after a worker died between marking the row done and reporting
    success: re-run the recording step, which takes the done row over, so the row names a
    run that succeeded. Re-executing every step is refused: one image per job."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(
        "IMAGEN_CONFIG",
        str(write_config({"backends": {"mock": {"type": "mock", "calls_log": str(log)}}})),
    )
    insert_jobs(migrated_database_url, 1, width=64, height=64)
    [request] = run_requests(dagster_instance)
    job = reconstructable_job()
    with dg.execute_job(
        job, dagster_instance, run_config=request.run_config, tags=request.tags
    ) as first:
        assert first.success
    recording = dg.ReexecutionOptions(parent_run_id=first.run_id, step_selection=["record_usage"])
    with dg.execute_job(job, dagster_instance, reexecution_options=recording) as again:
        assert again.success
    [row] = sql(migrated_database_url, "SELECT * FROM imagen.jobs")
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert (row["status"], row["run_id"], row["image_id"]) == ("done", again.run_id, image["id"])

    everything = dg.ReexecutionOptions(parent_run_id=again.run_id)
    with dg.execute_job(job, dagster_instance, reexecution_options=everything) as whole:
        assert not whole.success
    assert len(log.read_text().splitlines()) == 1
    assert len(sql(migrated_database_url, "SELECT * FROM imagen.images")) == 1
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    [row] = sql(migrated_database_url, "SELECT * FROM imagen.jobs")
    assert (row["status"], row["run_id"]) == ("done", again.run_id)


@pytest.mark.parametrize(
    ("database_url", "status"),
    [(None, "STOPPED"), ("", "STOPPED"), ("postgresql://db.example/imagen", "RUNNING")],
)
def test_the_sensor_runs_by_default_only_where_a_database_is_configured(
    database_url: str | None, status: str
) -> None:
    """As `dagster dev` and the daemon load the code location, in a fresh process."""
    env = subprocess_env()
    env.pop("IMAGEN_DATABASE_URL", None)
    if database_url is not None:
        env["IMAGEN_DATABASE_URL"] = database_url
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "from imagen_pipeline.definitions import defs; "
            "print(defs().resolve_sensor_def('imagen_jobs_sensor').default_status.value)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert loaded.stdout.strip() == status

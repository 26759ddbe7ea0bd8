"""A backend that is down holds its own jobs, and only those, until it answers again
(sensor ticks and runs as launched, a real Postgres, the ComfyUI fake on a fixed port)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from psycopg.rows import dict_row

from imagen_pipeline.queue.holds import BACKEND_DOWN
from imagen_pipeline_tests.fakes.comfyui_server import running_fake_comfyui
from imagen_pipeline_tests.fakes.webhook_server import FakeWebhook
from imagen_pipeline_tests.fixtures.alerts import alerts_block
from imagen_pipeline_tests.fixtures.celery import free_port
from imagen_pipeline_tests.fixtures.queue import deployed_job, sensor_tick


def sql(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def insert_job(url: str, backend: str) -> int:
    [row] = sql(
        url,
        "INSERT INTO imagen.jobs (prompt, backend, width, height) "
        "VALUES ('a lighthouse at dusk', %s, 64, 64) RETURNING id",
        (backend,),
    )
    return int(row["id"])


def test_a_gpu_box_down_holds_its_jobs_until_it_answers_again(
    migrated_database_url: str,
    dagster_instance: dg.DagsterInstance,
    write_config: Callable[..., Path],
    tmp_path: Path,
    alert_webhook: FakeWebhook,
) -> None:
    """Also: the operator is told once that the box is down and once that it is back, however
    many ticks see it."""
    port = free_port()
    config = write_config(
        {
            "backends": {
                "box": {
                    "type": "comfyui",
                    "url": f"http://127.0.0.1:{port}",
                    "pool": "cloud",
                    "poll_interval_s": 0.02,
                    "state_dir": str(tmp_path / "slots"),
                },
                "mock": {"type": "mock"},
            },
            "queue": {"max_in_flight_per_owner": None},
            "alerts": alerts_block(),
        }
    )

    def tick() -> list[dg.RunRequest]:
        result = sensor_tick(dagster_instance, config)
        assert isinstance(result, dg.SensorResult), result
        return list(result.run_requests or [])

    def run(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return deployed_job(str(config)).execute_in_process(
            run_config=request.run_config,
            tags=request.tags,
            instance=dagster_instance,
            raise_on_error=False,
        )

    def row(job_id: int) -> dict[str, Any]:
        return sql(migrated_database_url, "SELECT * FROM imagen.jobs WHERE id = %s", (job_id,))[0]

    job = insert_job(migrated_database_url, "box")
    [request] = tick()
    assert not run(request).success, "the box does not answer"
    assert tick() == []
    held = row(job)
    assert (held["status"], held["attempts"], held["interruptions"]) == ("pending", 0, 1)
    assert held["progress_text"] == BACKEND_DOWN and held["error"] is None
    [hold] = sql(migrated_database_url, "SELECT * FROM imagen.job_holds")
    assert (hold["kind"], hold["scope"]) == ("backend", "box")

    tick()
    [down] = [request.json() for request in alert_webhook.requests]
    assert (down["alert"], down["title"]) == (
        {"kind": "problem", "key": "hold:backend:box"},
        "Backend 'box' is down",
    )

    other = insert_job(migrated_database_url, "mock")
    [other_request] = tick()
    assert other_request.tags["imagen/job_id"] == str(other), "only the box's jobs wait"
    assert run(other_request).success
    assert row(job)["status"] == "pending"

    with running_fake_comfyui(port) as box:
        # The hold's probe is due (it runs every 15 s), the row's pause after its
        # interruption is over.
        sql(
            migrated_database_url,
            "UPDATE imagen.job_holds SET checked_at = now() - '1 min'::interval",
        )
        sql(migrated_database_url, "UPDATE imagen.jobs SET retry_at = now()")
        [request] = tick()
        assert request.tags["imagen/job_id"] == str(job)
        assert request.tags["imagen/job_attempt"] == "2", (
            "a new claim, told apart from the lost one"
        )
        assert run(request).success
        assert len(box.submitted()) == 1
    tick()
    done = row(job)
    assert (done["status"], done["attempts"], done["interruptions"]) == ("done", 1, 1)
    assert sql(migrated_database_url, "SELECT * FROM imagen.job_holds") == []
    assert len(sql(migrated_database_url, "SELECT * FROM imagen.images")) == 2
    _, up = [request.json() for request in alert_webhook.requests]
    assert (up["alert"], up["title"]) == (
        {"kind": "resolved", "key": "hold:backend:box"},
        "Resolved: Backend 'box' is down",
    )

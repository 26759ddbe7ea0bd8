"""The generate_image job with a ``cloud:`` block: Storage fake, real Postgres, real runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from imagen_pipeline.defs.assets import IMAGE, IMAGES_TABLE, STORAGE_OBJECT, USAGE_TABLE
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.run_errors import run_step_failure
from imagen_pipeline.queue.holds import RUN_LOST
from imagen_pipeline_tests.cloud.conftest import BUCKET, FALLBACK_OWNER, KEY, OWNER
from imagen_pipeline_tests.fakes.comfyui_server import running_fake_comfyui
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.storage_server import DROP_AFTER_STORE, FakeStorage
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text
from imagen_pipeline_tests.fixtures.queue import (
    deployed_job,
    reconstructable_job,
    run_requests,
    web_session,
)


def run_config(config_file: Path, **op_config: Any) -> dict[str, Any]:
    return {
        "ops": {
            "enrich_prompt": {
                "config": {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, **op_config}
            }
        },
        "resources": file_resources(config_file),
    }


def execute(
    instance: dg.DagsterInstance, config_file: Path, **op_config: Any
) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config=run_config(config_file, **op_config), instance=instance, raise_on_error=False
    )


def sql(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def backend_calls(tmp_path: Path) -> int:
    log = tmp_path / "calls.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def image_uploads(storage: FakeStorage) -> list[str]:
    return [u.path for u in storage.uploads() if u.path.endswith(".png")]


def failed_step(instance: dg.DagsterInstance, run_id: str) -> str:
    [event] = [
        entry.dagster_event
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    ]
    assert event is not None and event.step_key is not None
    return event.step_key


def test_a_run_uploads_the_image_and_records_row_usage_and_url(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    result = execute(dagster_instance, cloud_config())
    assert result.success
    [stored] = result.output_for_node("write_files")
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert image["run_id"] == result.run_id
    assert str(image["owner_user_id"]) == FALLBACK_OWNER
    assert image["storage_bucket"] == BUCKET
    assert image["storage_path"].startswith(f"{FALLBACK_OWNER}/")
    obj = cloud_env.objects[(BUCKET, image["storage_path"])]
    assert hashlib.sha256(obj.data).hexdigest() == image["sha256"] == stored.sha256
    assert httpx.get(image["url"]).content == obj.data, "the recorded URL serves the image"
    assert image["metadata"]["url_mode"] == "signed"

    [usage] = sql(migrated_database_url, "SELECT * FROM mai.imagen_usage")
    assert (usage["status"], usage["image_id"], usage["run_id"]) == (
        "succeeded",
        image["id"],
        result.run_id,
    )
    assert (usage["backend_instance"], usage["model"]) == ("mock", "mock-v1")
    assert str(usage["owner_user_id"]) == FALLBACK_OWNER

    sidecar = json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))
    assert sidecar["cloud"]["url"] == image["url"]
    materialized = {
        key: dagster_instance.get_latest_materialization_event(key)
        for key in (IMAGE, STORAGE_OBJECT, IMAGES_TABLE, USAGE_TABLE)
    }
    assert all(e is not None and e.run_id == result.run_id for e in materialized.values())
    meta = {key: e.asset_materialization.metadata for key, e in materialized.items() if e}
    assert meta[IMAGE]["path"].value == stored.image_path
    assert meta[STORAGE_OBJECT]["url"].value == image["url"]
    assert meta[STORAGE_OBJECT]["storage_object"].value == f"{BUCKET}/{image['storage_path']}"
    assert meta[IMAGES_TABLE]["image_id"].value == image["id"]
    assert meta[IMAGES_TABLE]["url"].value == image["url"]
    assert meta[USAGE_TABLE]["generation_key"].value == usage["generation_key"]


def test_without_a_cloud_block_the_run_succeeds_and_says_so(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    result = execute(dagster_instance, write_config())
    assert result.success
    messages = [entry.user_message for entry in dagster_instance.all_logs(result.run_id)]
    assert any(m.startswith("cloud sync not configured (no cloud: block") for m in messages)
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert (image["storage_bucket"], image["storage_path"], image["url"]) == (None, None, None)
    assert len(sql(migrated_database_url, "SELECT * FROM mai.imagen_usage")) == 1


def test_storage_down_fails_at_cloud_sync_and_reexecution_uploads_without_the_backend(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("SUPABASE_URL", down)
    config = run_config(cloud_config())
    with dg.execute_job(reconstructable_job(), dagster_instance, run_config=config) as first:
        assert not first.success
        failed_run_id = first.run_id
    assert failed_step(dagster_instance, failed_run_id) == "cloud_sync"
    failure = run_step_failure(dagster_instance, failed_run_id) or ""
    assert f"Supabase Storage at {down} is unreachable (reading bucket 'images')" in failure
    assert KEY not in failure
    assert sql(migrated_database_url, "SELECT * FROM imagen.images") == []
    assert backend_calls(tmp_path) == 1

    monkeypatch.setenv("SUPABASE_URL", cloud_env.url)
    options = dg.ReexecutionOptions.from_failure(failed_run_id, dagster_instance)
    with dg.execute_job(
        reconstructable_job(), dagster_instance, reexecution_options=options
    ) as second:
        assert second.success
        second_run_id = second.run_id
    assert backend_calls(tmp_path) == 1, "re-execution must not call the backend again"
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert image["run_id"] == failed_run_id, "the row names the run that generated the image"
    assert image["metadata"]["written_by_run_id"] == second_run_id
    assert len(image_uploads(cloud_env)) == 1
    assert len(sql(migrated_database_url, "SELECT * FROM mai.imagen_usage")) == 1


def test_database_down_fails_at_record_usage_and_reexecution_records_once_without_reupload(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("IMAGEN_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{closed_port()}/x")
    config = run_config(cloud_config())
    with dg.execute_job(reconstructable_job(), dagster_instance, run_config=config) as first:
        assert not first.success
        failed_run_id = first.run_id
    assert failed_step(dagster_instance, failed_run_id) == "record_usage"
    failure = run_step_failure(dagster_instance, failed_run_id) or ""
    assert (
        "imagen database ($IMAGEN_DATABASE_URL) failed while recording the image and usage "
        "rows: connection failed"
    ) in failure
    [uploaded] = image_uploads(cloud_env)

    monkeypatch.setenv("IMAGEN_DATABASE_URL", migrated_database_url)
    options = dg.ReexecutionOptions.from_failure(failed_run_id, dagster_instance)
    with dg.execute_job(
        reconstructable_job(), dagster_instance, reexecution_options=options
    ) as second:
        assert second.success
    assert image_uploads(cloud_env) == [uploaded], "the object is not uploaded a second time"
    assert backend_calls(tmp_path) == 1
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert f"/storage/v1/object/{BUCKET}/{image['storage_path']}" == uploaded
    [usage] = sql(migrated_database_url, "SELECT * FROM mai.imagen_usage")
    assert usage["image_id"] == image["id"]


def test_a_lost_upload_reply_is_retried_into_one_object_and_one_row(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    cloud_env.upload_replies.append(DROP_AFTER_STORE)
    result = execute(dagster_instance, cloud_config())
    assert result.success
    retries = [e.step_key for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries == ["cloud_sync"]
    [first, second] = image_uploads(cloud_env)
    assert first == second
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert cloud_env.objects[(BUCKET, image["storage_path"])].versions == 1
    assert len([key for key in cloud_env.objects if key[1].endswith(".png")]) == 1


def test_a_path_held_by_another_image_fails_clearly_and_records_nothing(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    path = f"{FALLBACK_OWNER}/a-lighthouse-at-dusk.png"
    cloud_env.put_object(BUCKET, path, b"another image", "image/png")
    config_file = cloud_config(
        {"path_template": "{owner}/{filename}"},
        output={"directory": str(tmp_path / "out"), "naming": "{slug}"},
    )
    result = execute(dagster_instance, config_file)
    assert not result.success
    assert f"cloud.path_template: {BUCKET}/{path} already holds another image" in (
        step_failure_text(result)
    )
    assert len(image_uploads(cloud_env)) == 1, "a permanent error is not retried"
    assert cloud_env.objects[(BUCKET, path)].data == b"another image"
    assert sql(migrated_database_url, "SELECT * FROM imagen.images") == []
    assert sql(migrated_database_url, "SELECT * FROM mai.imagen_usage") == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            {"SUPABASE_SERVICE_ROLE_KEY": "a-pasted-anon-key"},
            "rejected the key in $SUPABASE_SERVICE_ROLE_KEY (cloud.key_env) while reading "
            "bucket 'images': Invalid API key",
        ),
        (
            {"bucket": "imgaes"},
            "cloud.bucket: bucket 'imgaes' does not exist in Supabase Storage at",
        ),
        (
            {"SUPABASE_SERVICE_ROLE_KEY": None},
            "cloud.key_env: environment variable SUPABASE_SERVICE_ROLE_KEY is not set",
        ),
    ],
)
def test_a_broken_cloud_setup_fails_with_the_reason_and_records_nothing(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    setup: dict[str, str | None],
    message: str,
) -> None:
    cloud: dict[str, Any] = {}
    for name, value in setup.items():
        if name == "bucket":
            cloud["bucket"] = value
        elif value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    result = execute(dagster_instance, cloud_config(cloud))
    assert not result.success
    text = step_failure_text(result)
    assert message in text
    assert KEY not in text and "a-pasted-anon-key" not in text
    assert [e.step_key for e in result.all_events if e.is_step_failure] == ["cloud_sync"]
    assert cloud_env.uploads() == []
    assert sql(migrated_database_url, "SELECT * FROM imagen.images") == []
    assert sql(migrated_database_url, "SELECT * FROM mai.imagen_usage") == []


def test_a_jobs_owner_wins_and_the_job_row_links_the_uploaded_image(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_file = cloud_config()
    monkeypatch.setenv("IMAGEN_CONFIG", str(config_file))
    [job] = sql(
        migrated_database_url,
        "INSERT INTO imagen.jobs (owner_user_id, prompt, width, height) "
        "VALUES (%s, 'a fox', 64, 64) RETURNING id",
        (OWNER,),
    )
    [request] = run_requests(dagster_instance, config_file)
    result = deployed_job().execute_in_process(
        run_config=request.run_config, tags=request.tags, instance=dagster_instance
    )
    assert result.success
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    [row] = sql(migrated_database_url, "SELECT * FROM imagen.jobs WHERE id = %s", (job["id"],))
    assert (row["status"], row["image_id"]) == ("done", image["id"])
    assert image["job_id"] == job["id"]
    assert str(image["owner_user_id"]) == OWNER
    assert image["storage_path"].startswith(f"{OWNER}/")
    assert (BUCKET, image["storage_path"]) in cloud_env.objects


def test_a_clients_allowed_option_is_sent_and_recorded_in_sidecar_row_and_materialization(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A web client's row asks for ``guidance: 4`` on a ComfyUI instance (the adapter's
    default allow-list offers guidance 1-10): the fake server renders with 4, and the sidecar's
    ``backend.options``, ``imagen.images.metadata.backend_options`` and the image's
    materialization (``backend_options``) all show it."""
    with running_fake_comfyui() as comfyui:
        block = {
            "type": "comfyui",
            "url": comfyui.url,
            "poll_interval_s": 0.02,
            "timeout_s": 30,
            "state_dir": str(tmp_path / "slots"),
        }
        config_file = cloud_config(default_backend="gpu", backends={"gpu": block})
        monkeypatch.setenv("IMAGEN_CONFIG", str(config_file))
        with web_session(migrated_database_url, OWNER) as cursor:
            job = cursor.execute(
                "INSERT INTO imagen.jobs (owner_user_id, prompt, width, height, backend_opts) "
                "VALUES (%s, 'a fox', 64, 64, %s) RETURNING id",
                (OWNER, Jsonb({"guidance": 4})),
            ).fetchone()
        assert job is not None
        [request] = run_requests(dagster_instance, config_file)
        result = deployed_job().execute_in_process(
            run_config=request.run_config, tags=request.tags, instance=dagster_instance
        )
        assert result.success
        [body] = comfyui.submitted()
    graph = body["prompt"]
    assert graph["26"]["inputs"]["guidance"] == 4.0
    assert graph["27"]["inputs"]["batch_size"] == 1
    [stored] = result.output_for_node("write_files")
    sidecar = json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))
    assert sidecar["backend"] == {"instance": "gpu", "type": "comfyui", "options": {"guidance": 4}}
    assert sidecar["result"]["extra"]["guidance"] == 4.0
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert image["job_id"] == job["id"]
    assert image["metadata"]["backend_options"] == {"guidance": 4}
    event = dagster_instance.get_latest_materialization_event(IMAGE)
    assert event is not None and event.run_id == result.run_id
    assert event.asset_materialization.metadata["backend_options"].value == {"guidance": 4}


def test_a_queued_job_whose_upload_failed_is_retried_into_one_call_one_file_one_object(
    migrated_database_url: str,
    cloud_env: FakeStorage,
    cloud_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The image was generated and written, the upload failed (Storage away: an outage, so
    the job goes back to pending, its attempt given back, and is claimed again after a
    pause): the next run re-uses the file under its final name (no second backend call, no
    second file)."""
    config_file = cloud_config()
    monkeypatch.setenv("IMAGEN_CONFIG", str(config_file))
    monkeypatch.setenv("SUPABASE_URL", f"http://127.0.0.1:{closed_port()}")
    sql(
        migrated_database_url,
        "INSERT INTO imagen.jobs (owner_user_id, prompt, width, height) "
        "VALUES (%s, 'a fox', 64, 64) RETURNING id",
        (OWNER,),
    )

    def tick() -> list[dg.RunRequest]:
        return run_requests(dagster_instance, config_file)

    def run(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return deployed_job().execute_in_process(
            run_config=request.run_config,
            tags=request.tags,
            instance=dagster_instance,
            raise_on_error=False,
        )

    [request] = tick()
    first = run(request)
    assert not first.success
    assert tick() == [], "not claimed again at once"
    [row] = sql(migrated_database_url, "SELECT * FROM imagen.jobs")
    assert (row["status"], row["attempts"], row["interruptions"], row["error"]) == (
        "pending",
        0,
        1,
        None,
    )
    assert row["progress_text"] == RUN_LOST
    assert 0 < (row["retry_at"] - row["updated_at"]).total_seconds() <= 6
    detail = run_step_failure(dagster_instance, first.run_id) or ""
    assert "is unreachable (reading bucket 'images')" in detail
    assert "CloudSyncError" not in detail, "the class name is not repeated in the message"

    monkeypatch.setenv("SUPABASE_URL", cloud_env.url)
    sql(migrated_database_url, "UPDATE imagen.jobs SET retry_at = now()")
    [request] = tick()
    assert run(request).success
    assert backend_calls(tmp_path) == 1
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    assert len(image_uploads(cloud_env)) == 1
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    [row] = sql(migrated_database_url, "SELECT * FROM imagen.jobs")
    assert (row["status"], row["image_id"]) == ("done", image["id"])

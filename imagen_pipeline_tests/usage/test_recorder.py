"""Usage rows: one per backend call (failed ones too), recorded once, with the image row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from psycopg.rows import dict_row

from imagen_pipeline.cloud.sync import StorageLocation, SyncOutcome
from imagen_pipeline.db.connection import connect
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.storage.errors import CloudSyncError
from imagen_pipeline.usage.recorder import record_images
from imagen_pipeline_tests.fakes.openai_server import running_fake_openai
from imagen_pipeline_tests.fixtures.imagen import file_resources

OWNER = "00000000-0000-4000-8000-0000000000d1"
OPENAI_KEY = "sk-proj-ImagenRecorderTestKey0123456789"


def sql(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def execute(
    instance: dg.DagsterInstance, config_file: Path, **op_config: Any
) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {
                "enrich_prompt": {
                    "config": {"prompt": "a fox", "width": 64, "height": 64, **op_config}
                }
            },
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )


def usage_rows(url: str) -> list[dict[str, Any]]:
    return sql(url, "SELECT * FROM mai.imagen_usage ORDER BY generation_key")


def test_a_permanent_backend_failure_is_recorded_as_a_failed_call(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    config_file = write_config(
        {"backends": {"mock": {"type": "mock", "fail_permanent": "content policy"}}}
    )
    result = execute(dagster_instance, config_file, owner_user_id=OWNER)
    assert not result.success
    [row] = usage_rows(migrated_database_url)
    assert row["generation_key"] == f"{result.run_id}:0"
    assert (row["status"], float(row["cost_usd"]), row["image_id"]) == ("failed", 0.0, None)
    assert row["error"] == "mock backend rejected the request: content policy"
    assert (row["backend_instance"], row["backend_type"], row["model"]) == (
        "mock",
        "mock",
        "mock-v1",
    )
    assert str(row["owner_user_id"]) == OWNER
    assert sql(migrated_database_url, "SELECT * FROM imagen.images") == []


def test_transient_failures_leave_one_failed_row_per_attempt_then_the_success(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    config_file = write_config(
        {"backends": {"mock": {"type": "mock", "fail_transient_attempts": 2, "cost_usd": 0.04}}}
    )
    result = execute(dagster_instance, config_file)
    assert result.success
    [image] = sql(migrated_database_url, "SELECT id FROM imagen.images")
    rows = usage_rows(migrated_database_url)
    assert [(r["generation_key"], r["status"]) for r in rows] == [
        (f"{result.run_id}:0", "failed"),
        (f"{result.run_id}:1", "failed"),
        (f"{result.run_id}:2", "succeeded"),
    ]
    assert [float(r["cost_usd"]) for r in rows] == [0.0, 0.0, 0.04]
    assert [r["price_source"] for r in rows] == ["not_billed", "not_billed", "config"]
    assert rows[2]["image_id"] == image["id"]
    assert "simulated a transient failure" in rows[0]["error"]


def test_an_unknown_price_is_recorded_as_null_with_its_source_never_as_zero(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEN_TEST_OPENAI_KEY", OPENAI_KEY)
    with running_fake_openai(OPENAI_KEY) as fake:
        block = {"type": "openai", "api_key_env": "IMAGEN_TEST_OPENAI_KEY"}
        config_file = write_config(
            {"default_backend": "oai", "backends": {"oai": {**block, "base_url": fake.base_url}}}
        )
        result = execute(dagster_instance, config_file, width=1024, height=1024)
    assert result.success
    [row] = usage_rows(migrated_database_url)
    assert (row["status"], row["cost_usd"], row["price_source"]) == ("succeeded", None, "unknown")
    assert row["tokens"]["output_tokens"] > 0, "the usage is kept, to price it later"
    [image] = sql(migrated_database_url, "SELECT cost_usd FROM imagen.images")
    assert image["cost_usd"] is None
    logs = "\n".join(str(r.user_message) for r in dagster_instance.all_logs(result.run_id))
    assert "cost recorded as unknown: no price known for gpt-image-2" in logs


def test_recording_the_same_image_twice_writes_each_row_once(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    result = execute(dagster_instance, write_config())
    assert result.success
    [stored] = result.output_for_node("write_files")
    [synced] = result.output_for_node("cloud_sync")
    with connect(migrated_database_url) as conn:
        again = record_images(conn, [(stored, synced)], "a-re-execution-run")
    assert again.detail.startswith(f"imagen.images row {again.image_id}; usage already recorded")
    [image] = sql(migrated_database_url, "SELECT * FROM imagen.images")
    assert image["id"] == again.image_id
    assert image["metadata"]["written_by_run_id"] == "a-re-execution-run"
    assert len(usage_rows(migrated_database_url)) == 1


def test_without_a_database_nothing_is_recorded_and_the_run_succeeds(
    write_config: Callable[..., Path], dagster_instance: dg.DagsterInstance
) -> None:
    config_file = write_config({"backends": {"mock": {"type": "mock", "cost_usd": 0.5}}})
    result = execute(dagster_instance, config_file)
    assert result.success
    outcome = result.output_for_node("record_usage")
    assert outcome.status == "not_configured"
    assert outcome.detail == (
        "image and usage rows not recorded (IMAGEN_DATABASE_URL is not set); "
        "this image cost $0.5000 on mock"
    )


def test_an_object_path_recorded_for_another_run_is_refused_with_that_run(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    result = execute(dagster_instance, write_config())
    [stored] = result.output_for_node("write_files")
    location = StorageLocation(
        bucket="images", path="u/2026-11-24/a-fox.png", url="https://x/a", url_mode="public"
    )
    synced = SyncOutcome(location=location, detail="uploaded")
    with connect(migrated_database_url) as conn:
        record_images(conn, [(stored, synced)], result.run_id)
    other = stored.model_copy(
        update={"generated": stored.generated.model_copy(update={"run_id": "other-run"})}
    )
    with connect(migrated_database_url) as conn, pytest.raises(CloudSyncError) as caught:
        record_images(conn, [(other, synced)], "other-run")
    assert str(caught.value) == (
        "imagen.images already has a row for object images/u/2026-11-24/a-fox.png from run "
        f"{result.run_id}; nothing was recorded. Make object paths unique per image (add "
        "{run_id} to cloud.path_template)"
    )
    assert len(sql(migrated_database_url, "SELECT * FROM imagen.images")) == 1
    assert len(usage_rows(migrated_database_url)) == 1

"""Retention on a real Postgres Dagster instance and a real imagen database: old runs go
with their event logs and compute log files, younger ones and every image stay."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from imagen_pipeline.config.models import RetentionConfig
from imagen_pipeline.defs.housekeeping import build_housekeeping_job
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource
from imagen_pipeline.generate.setup import load_setup
from imagen_pipeline.housekeeping.cleanup import CleanUp, clean_up
from imagen_pipeline.run_tags import TAG_JOB_ID
from imagen_pipeline_tests.fixtures.imagen import file_resources
from imagen_pipeline_tests.fixtures.postgres import throwaway_database


@pytest.fixture
def instance(tmp_path: Path, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Dagster instance on a fresh Postgres database, compute logs in files as in
    production (scripts/dagster.postgres.yaml)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with throwaway_database(postgres_server_url) as url:
        config = {
            "storage": {"postgres": {"postgres_url": url}},
            "compute_logs": {
                "module": "imagen_pipeline.instance.file_compute_logs",
                "class": "FileComputeLogManager",
                "config": {},
            },
            "telemetry": {"enabled": False},
        }
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.from_config(str(home)) as opened:
            yield opened


def generate(
    instance: dg.DagsterInstance, config_file: Path, prompt: str, **tags: str
) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": prompt, "width": 64, "height": 64}}},
            "resources": file_resources(config_file),
        },
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )


def compute_log_dir(instance: dg.DagsterInstance, run_id: str) -> Path:
    return Path(instance.root_directory) / "storage" / run_id


def clean_up_everything(
    instance: dg.DagsterInstance,
    config_file: Path,
    database_url: str | None,
    batch_size: int,
    dry_run: bool = False,
) -> CleanUp:
    """``imagen housekeeping --older-than 0s`` (with ``--dry-run``) on ``instance``."""
    return clean_up(
        instance,
        RetentionConfig(batch_size=batch_size),
        load_setup(config_file).output_dir,
        database_url,
        datetime.now(UTC),
        older_than=timedelta(0),
        dry_run=dry_run,
    )


def image_rows(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        conn.row_factory = psycopg.rows.dict_row
        rows = conn.execute(
            "SELECT run_id, prompt, enriched_prompt, seed, model, backend, cost_usd, latency_s "
            "FROM imagen.images"
        ).fetchall()
    return {row["run_id"]: row for row in rows}


def test_old_runs_go_with_their_events_and_compute_logs_and_images_keep_their_lineage(
    instance: dg.DagsterInstance, migrated_database_url: str, write_config: Any
) -> None:
    config_file = write_config()
    old = [generate(instance, config_file, f"old {i}") for i in range(2)]
    failed_old = build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": "x", "backend": "missing"}}},
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )
    assert [run.success for run in old] == [True, True] and not failed_old.success
    for run in old:
        assert compute_log_dir(instance, run.run_id).is_dir()
        assert instance.all_logs(run.run_id)
    time.sleep(0.05)
    cutoff = datetime.now(UTC)
    time.sleep(0.05)
    young = generate(instance, config_file, "young")
    lineage_before = image_rows(migrated_database_url)
    # What a capture marking itself complete after its run was deleted leaves behind.
    orphan = compute_log_dir(instance, "0e0e0e0e-0000-4000-8000-00000000000e")
    (orphan / "compute_logs").mkdir(parents=True)
    (orphan / "compute_logs" / "abc.complete").touch()
    # A sensor tick's captured log (Dagster's tick retention leaves these).
    tick_folder = compute_log_dir(instance, "__repository__") / "imagen_jobs_sensor"
    tick_folder.mkdir(parents=True)
    (tick_folder / "7.err").touch()
    an_hour_ago = time.time() - 3600
    os.utime(tick_folder / "7.err", (an_hour_ago, an_hour_ago))

    result = clean_up(
        instance,
        RetentionConfig(succeeded_runs="0s", failed_runs="90d"),
        load_setup(config_file).output_dir,
        migrated_database_url,
        cutoff,
    )

    assert (result.runs.succeeded, result.runs.failed) == (2, 0), result.summary()
    assert result.runs.orphan_log_folders == 1 and not orphan.exists()
    assert result.runs.tick_log_files == 1
    assert not compute_log_dir(instance, "__repository__").exists()
    for run in old:
        assert instance.get_run_by_id(run.run_id) is None
        assert instance.all_logs(run.run_id) == []
        assert not compute_log_dir(instance, run.run_id).exists()
    for kept in (young, failed_old):
        assert instance.get_run_by_id(kept.run_id) is not None
        assert instance.all_logs(kept.run_id)
    assert compute_log_dir(instance, young.run_id).is_dir()
    # Every image, old runs' included, keeps what its run showed.
    assert image_rows(migrated_database_url) == lineage_before
    assert set(lineage_before) == {run.run_id for run in [*old, young]}
    assert len(list((load_setup(config_file).output_dir).glob("*.png"))) == 3


def test_a_run_whose_job_has_not_ended_is_kept(
    instance: dg.DagsterInstance, migrated_database_url: str, write_config: Any
) -> None:
    config_file = write_config()
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        [(running,)] = conn.execute(
            "INSERT INTO imagen.jobs (prompt, status) VALUES ('x', 'running') RETURNING id"
        ).fetchall()
        [(done,)] = conn.execute(
            "INSERT INTO imagen.jobs (prompt, status) VALUES ('y', 'done') RETURNING id"
        ).fetchall()
    waiting = generate(instance, config_file, "waiting", **{TAG_JOB_ID: str(running)})
    finished = generate(instance, config_file, "finished", **{TAG_JOB_ID: str(done)})

    result = clean_up_everything(instance, config_file, migrated_database_url, batch_size=1)

    assert (result.runs.total, result.runs.kept_for_their_job) == (1, 1), result.summary()
    assert instance.get_run_by_id(waiting.run_id) is not None
    assert instance.get_run_by_id(finished.run_id) is None


def test_batches_take_every_old_run(instance: dg.DagsterInstance, write_config: Any) -> None:
    config_file = write_config()
    runs = [generate(instance, config_file, f"p {i}") for i in range(5)]
    dry = clean_up_everything(instance, config_file, None, batch_size=2, dry_run=True)
    assert dry.runs.total == 5 and len(instance.get_runs()) == 5
    result = clean_up_everything(instance, config_file, None, batch_size=2)
    assert result.runs.total == 5
    assert instance.get_runs() == [] and all(not instance.all_logs(r.run_id) for r in runs)


def test_the_housekeeping_job_cleans_up_on_its_own_instance(
    instance: dg.DagsterInstance, write_config: Any
) -> None:
    config_file = write_config()
    old = generate(instance, config_file, "old")
    setup = load_setup(config_file)
    result = build_housekeeping_job().execute_in_process(
        run_config={"ops": {"clean_up_runs_and_staging": {"config": {"older_than": "0s"}}}},
        resources={"imagen": ImagenResource.of(setup), "imagen_db": ImagenDatabaseResource()},
        instance=instance,
    )
    assert result.success
    assert instance.get_run_by_id(old.run_id) is None
    # The housekeeping run itself was running, so it stays.
    assert instance.get_run_by_id(result.run_id) is not None


def test_with_retention_off_the_schedule_deletes_nothing(
    instance: dg.DagsterInstance, write_config: Any
) -> None:
    config_file = write_config({"retention": {"enabled": False, "succeeded_runs": "0s"}})
    old = generate(instance, config_file, "old")
    result = build_housekeeping_job().execute_in_process(
        resources={
            "imagen": ImagenResource.of(load_setup(config_file)),
            "imagen_db": ImagenDatabaseResource(),
        },
        instance=instance,
    )
    assert result.success
    assert instance.get_run_by_id(old.run_id) is not None


def test_the_schedule_is_on_by_default_and_daily() -> None:
    from imagen_pipeline.definitions import defs

    os.environ.pop("IMAGEN_CONFIG", None)
    schedule = defs().resolve_schedule_def("imagen_housekeeping_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "housekeeping"
    assert schedule.cron_schedule == "17 3 * * *"

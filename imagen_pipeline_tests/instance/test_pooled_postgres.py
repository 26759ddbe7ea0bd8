"""PooledPostgresStorage on a real Postgres: the production instance config, one run each way."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg
import pytest
import yaml

from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline_tests.fixtures.imagen import PRODUCTION_INSTANCE, file_resources


def write_instance(home: Path, stock: bool) -> None:
    """The shipped production instance config, or the same with dagster-postgres' own storage."""
    config = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    if stock:
        config["storage"] = {"postgres": config["storage"]["custom"]["config"]}
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def ended_sessions(server_url: str, database_url: str) -> int:
    """Sessions of ``database_url``'s database that have ended (pg_stat_database.sessions)."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sessions, 0) FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def sessions_for_one_run(
    home: Path, config_file: Path, server_url: str, database_url: str
) -> tuple[int, dg.DagsterRunStatus]:
    """Connections one instance opens to load and execute one run, and the run's status."""
    before = ended_sessions(server_url, database_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = build_generate_image_job(retry_delay_s=0).execute_in_process(
            run_config={
                "ops": {"enrich_prompt": {"config": {"prompt": "a lighthouse"}}},
                "resources": file_resources(config_file),
            },
            instance=instance,
            raise_on_error=False,
        )
        status = instance.get_run_by_id(result.run_id).status  # type: ignore[union-attr]
    # A backend reports its session when it exits, a moment after the client closed it.
    deadline = time.monotonic() + 10
    count = ended_sessions(server_url, database_url) - before
    while time.monotonic() < deadline:
        time.sleep(0.5)
        latest = ended_sessions(server_url, database_url) - before
        if latest == count:
            break
        count = latest
    return count, status


def test_pooled_storage_runs_a_job_on_a_fraction_of_the_connections(
    postgres_server_url: str,
    fresh_database_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", fresh_database_url)
    config_file = write_config()
    for kind in ("stock", "pooled"):
        write_instance(tmp_path / kind, stock=kind == "stock")
    with dg.DagsterInstance.from_config(str(tmp_path / "stock")):
        pass  # creates Dagster's tables, so neither measurement below pays for that
    counts = {}
    for kind in ("stock", "pooled"):
        counts[kind], status = sessions_for_one_run(
            tmp_path / kind, config_file, postgres_server_url, fresh_database_url
        )
        assert status == dg.DagsterRunStatus.SUCCESS
    assert counts["stock"] >= 40, counts
    assert counts["pooled"] * 5 <= counts["stock"], counts

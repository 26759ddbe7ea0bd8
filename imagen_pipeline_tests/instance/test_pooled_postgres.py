"""PooledPostgresStorage on a real Postgres: the production instance config, one run each way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import psycopg
import pytest
import yaml
from sqlalchemy import event
from sqlalchemy.engine import Engine

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
    return settled_sessions(server_url, database_url) - before, status


def settled_sessions(server_url: str, database_url: str) -> int:
    """:func:`ended_sessions` once it has stopped moving: a backend reports its session
    when it exits, a moment after the client closed it."""
    deadline = time.monotonic() + 10
    count = ended_sessions(server_url, database_url)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        latest = ended_sessions(server_url, database_url)
        if latest == count:
            break
        count = latest
    return count


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


def production_instances(
    home: Path, count: int, default_limit: int = 2
) -> list[dg.DagsterInstance]:
    """``count`` instances of the production config (as many processes would open), with
    ``concurrency.pools.default_limit`` set to ``default_limit``."""
    config = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    config["concurrency"]["pools"]["default_limit"] = default_limit
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return [dg.DagsterInstance.from_config(str(home)) for _ in range(count)]


def initialize_at_once(instances: list[dg.DagsterInstance], pool: str) -> list[str]:
    """Every instance gives ``pool`` its default limit at the same moment, as the run
    workers of a burst do before their first step claims a slot; the errors they met."""
    barrier = threading.Barrier(len(instances))
    errors: list[str] = []

    def initialize(instance: dg.DagsterInstance) -> None:
        barrier.wait()
        try:
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
        except Exception as error:
            errors.append(f"{pool}: {type(error).__name__}: {error}".splitlines()[0])

    threads = [threading.Thread(target=initialize, args=(i,)) for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_steps_that_meet_a_pool_without_a_limit_at_once_all_get_its_default(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-postgres' version lost the race in all but one of six: "current transaction
    is aborted", the step failed and the run was retried."""
    monkeypatch.setenv("DAGSTER_PG_URL", fresh_database_url)
    instances = production_instances(tmp_path / "home", 6)
    pools = [f"pool_{n}" for n in range(5)]
    try:
        errors = [error for pool in pools for error in initialize_at_once(instances, pool)]
        infos = instances[0].event_log_storage.get_concurrency_infos(pools)
    finally:
        for instance in instances:
            instance.dispose()
    assert errors == []
    found = {(info.limit, info.slot_count, info.using_default_limit) for info in infos.values()}
    assert found == {(2, 2, True)}


def test_a_changed_default_limit_reaches_the_pools_using_it_and_no_other(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-postgres' version failed every step of a pool on its default once
    ``default_limit`` changed in dagster.yaml ("current transaction is aborted")."""
    monkeypatch.setenv("DAGSTER_PG_URL", fresh_database_url)
    [before] = production_instances(tmp_path / "home", 1, default_limit=2)
    with before:
        before.event_log_storage.initialize_concurrency_limit_to_default("defaulted")
        before.event_log_storage.set_concurrency_slots("explicit", 5)
    [after] = production_instances(tmp_path / "home", 1, default_limit=3)
    with after:
        storage = after.event_log_storage
        for pool in ("defaulted", "explicit"):
            storage.initialize_concurrency_limit_to_default(pool)
        infos = storage.get_concurrency_infos(["defaulted", "explicit"])
    found = {pool: (i.limit, i.slot_count, i.using_default_limit) for pool, i in infos.items()}
    assert found == {"defaulted": (3, 3, True), "explicit": (5, 5, False)}


@contextmanager
def catalog_queries() -> Iterator[list[str]]:
    """The statements on Postgres' catalog (``pg_catalog``) that this process sends while
    the block runs: SQLAlchemy's schema reflection, which dagster-postgres uses to ask which
    tables and columns exist."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "pg_catalog" in statement:
            sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def test_the_pooled_storage_asks_the_catalog_once_per_process(
    postgres_server_url: str,
    fresh_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dagster-postgres asked which tables exist whenever it built a storage (three per
    instance: the code server builds one for every sensor tick) and which columns ``runs``
    has on every runs query; each new instance connected three times to ask."""
    monkeypatch.setenv("DAGSTER_PG_URL", fresh_database_url)
    for kind in ("stock", "pooled"):
        write_instance(tmp_path / kind, stock=kind == "stock")
    with dg.DagsterInstance.from_config(str(tmp_path / "pooled")) as instance:
        instance.get_run_records(limit=1)  # this process's first look at the schema
    queries = {}
    for kind in ("stock", "pooled"):
        with catalog_queries() as queries[kind]:
            for _ in range(5):
                with dg.DagsterInstance.from_config(str(tmp_path / kind)) as instance:
                    instance.get_run_records(limit=1)
                    instance.get_run_records(limit=1)
                    instance.schedule_storage.get_instigator_state("origin", "selector")  # type: ignore[union-attr]
    assert len(queries["stock"]) >= 5 * 6, queries["stock"]
    assert queries["pooled"] == []
    sessions = {}
    for kind in ("stock", "pooled"):
        before = ended_sessions(postgres_server_url, fresh_database_url)
        for _ in range(5):
            dg.DagsterInstance.from_config(str(tmp_path / kind)).dispose()
        sessions[kind] = settled_sessions(postgres_server_url, fresh_database_url) - before
    assert sessions["stock"] >= 15, sessions
    assert sessions["pooled"] == 0, sessions

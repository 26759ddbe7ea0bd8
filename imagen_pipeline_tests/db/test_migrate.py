"""Migrations on real PostgreSQL: idempotent, Supabase CLI history, one transaction per file."""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner

from imagen_pipeline.cli.main import cli
from imagen_pipeline.db import migrate as migrate_module
from imagen_pipeline.db.migrate import Migration, migrate, shipped_migrations
from imagen_pipeline.errors import ConfigError


def _history(url: str) -> list[tuple[str, str, list[str]]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, name, statements FROM supabase_migrations.schema_migrations "
            "ORDER BY version"
        ).fetchall()


def test_shipped_files_follow_the_supabase_cli_naming() -> None:
    migrations = shipped_migrations()
    assert [m.name for m in migrations] == [
        "imagen_jobs",
        "imagen_images",
        "mai_imagen_usage",
        "imagen_jobs_client_rules",
        "usage_price_source",
        "backend_server",
        "jobs_priority_progress_variations",
        "budget_holds",
        "job_holds",
        "operator_alerts",
        "queue_pause_position",
        "source_images",
        "client_sources_any_shape",
    ]
    assert all(len(m.version) == 14 and m.version.isdigit() for m in migrations)


def test_migrate_applies_everything_once_and_records_cli_history(fresh_database_url: str) -> None:
    first = migrate(fresh_database_url, bootstrap=True)
    second = migrate(fresh_database_url)
    assert len(first.applied) == len(shipped_migrations()) and first.already_applied == []
    assert second.applied == [] and second.already_applied == first.applied
    history = _history(fresh_database_url)
    assert [(v, n) for v, n, _ in history] == [(m.version, m.name) for m in shipped_migrations()]
    assert history[0][2] == [shipped_migrations()[0].sql]
    with psycopg.connect(fresh_database_url) as conn:
        tables = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('imagen', 'mai') ORDER BY 1"
        ).fetchall()
    assert [t for (t,) in tables] == [
        "imagen.alert_limit",
        "imagen.alerts",
        "imagen.image_parents",
        "imagen.images",
        "imagen.job_holds",
        "imagen.jobs",
        "imagen.queue_state",
        "mai.imagen_budget_holds",
        "mai.imagen_usage",
    ]


def test_plain_postgres_without_bootstrap_is_refused_with_the_flag_to_use(
    fresh_database_url: str,
) -> None:
    with pytest.raises(ConfigError, match=r"imagen db migrate --bootstrap"):
        migrate(fresh_database_url)


def test_a_failing_file_leaves_neither_its_changes_nor_its_history_row(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = Migration(
        "29991231000000", "broken", "CREATE TABLE imagen.half_done (id int); SELECT 1/0;"
    )
    monkeypatch.setattr(
        migrate_module, "shipped_migrations", lambda: [*shipped_migrations(), broken]
    )
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(fresh_database_url, bootstrap=True)
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT to_regclass('imagen.half_done')").fetchone() == (None,)
    assert [v for v, _, _ in _history(fresh_database_url)] == [
        m.version for m in shipped_migrations()
    ]


def test_versions_applied_by_the_supabase_cli_are_not_reapplied(fresh_database_url: str) -> None:
    """A database whose history says a version is applied (e.g. by `supabase db push`)."""
    first = shipped_migrations()[0]
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(migrate_module.bootstrap_sql())
        conn.execute(migrate_module.HISTORY_DDL)
        conn.execute(first.sql)
        conn.execute(
            "INSERT INTO supabase_migrations.schema_migrations (version, statements, name) "
            "VALUES (%s, %s, %s)",
            (first.version, [first.sql], first.name),
        )
    report = migrate(fresh_database_url)
    assert report.already_applied == [f"{first.version}_{first.name}"]
    assert len(report.applied) == len(shipped_migrations()) - 1


def test_cli_migrate_reports_what_it_did(fresh_database_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "migrate", "--dsn", fresh_database_url, "--bootstrap"])
    assert result.exit_code == 0, result.output
    assert "applied 20261124090000_imagen_jobs" in result.output
    count = len(shipped_migrations())
    assert result.output.strip().endswith(f"{count} applied, 0 already up to date")
    again = runner.invoke(cli, ["db", "migrate", "--dsn", fresh_database_url])
    assert again.exit_code == 0
    assert again.output.strip() == f"0 applied, {count} already up to date"


def test_cli_migrate_without_a_database_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMAGEN_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["db", "migrate"])
    assert result.exit_code == 2
    assert "IMAGEN_DATABASE_URL is not set" in result.output

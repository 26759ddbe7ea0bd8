"""The alert tables are the pipeline's own: web clients (Supabase's anon and authenticated
roles, as PostgREST sets them) can neither read nor write them; the service role can."""

from __future__ import annotations

import psycopg
import pytest

from imagen_pipeline_tests.fixtures.queue import web_session

USER = "0a0a0a0a-0000-4000-8000-00000000000a"
STATEMENTS = [
    "SELECT * FROM imagen.alerts",
    "INSERT INTO imagen.alerts (key, title) VALUES ('broker', 'x')",
    "SELECT * FROM imagen.alert_limit",
    "UPDATE imagen.alert_limit SET tokens = 1000",
]


@pytest.mark.parametrize("statement", STATEMENTS)
@pytest.mark.parametrize(("role", "user"), [("authenticated", USER), ("anon", None)])
def test_web_clients_cannot_read_or_write_the_alert_tables(
    migrated_database_url: str, statement: str, role: str, user: str | None
) -> None:
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
        web_session(migrated_database_url, user, role) as cursor,
    ):
        cursor.execute(statement)


def test_the_service_role_reads_and_writes_them(migrated_database_url: str) -> None:
    with web_session(migrated_database_url, None, "service_role") as cursor:
        for statement in STATEMENTS:
            cursor.execute(statement)
        rows = cursor.execute("SELECT count(*) AS n FROM imagen.alert_limit").fetchone()
    assert rows == {"n": 1}

"""Apply the SQL migrations shipped in ``imagen_pipeline/db/migrations``.

Files follow the Supabase CLI's conventions (``<YYYYMMDDHHMMSS>_<name>.sql``) and history is
kept in the CLI's own table ``supabase_migrations.schema_migrations(version, statements,
name)``, so a database migrated here is up to date for ``supabase db push`` and the other way
round. Each file runs in its own transaction together with its history row; an advisory lock
keeps two migrators from interleaving.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from imagen_pipeline.db.connection import connect
from imagen_pipeline.errors import ConfigError

MIGRATION_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")
ADVISORY_LOCK_KEY = 0x696D6167656E  # "imagen"
HISTORY_DDL = """
CREATE SCHEMA IF NOT EXISTS supabase_migrations;
CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (
    version text NOT NULL PRIMARY KEY,
    statements text[],
    name text
);
"""


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (timestamp), name and SQL."""

    version: str
    name: str
    sql: str


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did."""

    applied: list[str]
    already_applied: list[str]
    bootstrapped: bool


def shipped_migrations() -> list[Migration]:
    """The package's migrations in version order."""
    folder = resources.files("imagen_pipeline.db").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = MIGRATION_NAME.match(entry.name)
        if match is None:
            raise ConfigError(
                f"migration file {entry.name!r} is not named <YYYYMMDDHHMMSS>_<name>.sql"
            )
        found.append(Migration(match["version"], match["name"], entry.read_text("utf-8")))
    return sorted(found, key=lambda migration: migration.version)


def bootstrap_sql() -> str:
    """SQL creating Supabase's roles and ``auth.uid()`` on plain PostgreSQL."""
    return resources.files("imagen_pipeline.db").joinpath("supabase_bootstrap.sql").read_text()


def _has_supabase_auth(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        """
        SELECT to_regprocedure('auth.uid()') IS NOT NULL
           AND (SELECT count(*) FROM pg_roles
                 WHERE rolname IN ('anon', 'authenticated', 'service_role')) = 3
        """
    ).fetchone()
    return bool(row and row[0])


def applied_versions(conn: psycopg.Connection) -> set[str]:
    """Versions recorded in the Supabase CLI's history table (empty if it does not exist)."""
    exists = conn.execute(
        "SELECT to_regclass('supabase_migrations.schema_migrations') IS NOT NULL"
    ).fetchone()
    if not exists or not exists[0]:
        return set()
    rows = conn.execute("SELECT version FROM supabase_migrations.schema_migrations").fetchall()
    return {str(row[0]) for row in rows}


def migrate(dsn: str | None = None, bootstrap: bool = False) -> MigrationReport:
    """Apply every shipped migration not yet recorded; idempotent.

    With ``bootstrap`` the Supabase roles and ``auth`` functions are created first (plain
    PostgreSQL only). Without it, a database lacking them is refused with a message saying so.
    """
    migrations = shipped_migrations()
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            if bootstrap:
                with conn.transaction():
                    conn.execute(bootstrap_sql())
            elif not _has_supabase_auth(conn):
                raise ConfigError(
                    "database has no Supabase roles (anon, authenticated, service_role) or "
                    "auth.uid(); on plain PostgreSQL run `imagen db migrate --bootstrap`"
                )
            with conn.transaction():
                conn.execute(HISTORY_DDL)
            done = applied_versions(conn)
            applied, skipped = [], []
            for migration in migrations:
                label = f"{migration.version}_{migration.name}"
                if migration.version in done:
                    skipped.append(label)
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO supabase_migrations.schema_migrations "
                        "(version, statements, name) VALUES (%s, %s, %s)",
                        (migration.version, [migration.sql], migration.name),
                    )
                applied.append(label)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return MigrationReport(applied=applied, already_applied=skipped, bootstrapped=bootstrap)

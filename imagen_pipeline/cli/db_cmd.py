"""``imagen db migrate``: bring the imagen database's schema up to date."""

from __future__ import annotations

import click
import psycopg

from imagen_pipeline.cli.errors import EXIT_FAILED, CliError
from imagen_pipeline.db.connection import DATABASE_URL_ENV
from imagen_pipeline.db.migrate import migrate as apply_migrations
from imagen_pipeline.errors import ImagenError


@click.group()
def db() -> None:
    """The imagen database (schemas imagen and mai)."""


@db.command()
@click.option(
    "--dsn",
    help=f"libpq URL of the database; default: ${DATABASE_URL_ENV}.",
)
@click.option(
    "--bootstrap",
    is_flag=True,
    help="First create Supabase's roles and auth.uid() (plain PostgreSQL only, never Supabase).",
)
def migrate(dsn: str | None, bootstrap: bool) -> None:
    """Apply the shipped migrations not yet recorded in supabase_migrations.schema_migrations."""
    try:
        report = apply_migrations(dsn, bootstrap=bootstrap)
    except ImagenError as error:
        raise CliError(str(error)) from None
    except psycopg.Error as error:
        raise CliError(f"migration failed: {error}".strip(), EXIT_FAILED) from None
    if report.bootstrapped:
        click.echo("bootstrapped Supabase roles and auth functions")
    for label in report.applied:
        click.echo(f"applied {label}")
    click.echo(f"{len(report.applied)} applied, {len(report.already_applied)} already up to date")

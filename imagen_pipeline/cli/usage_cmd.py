"""``imagen usage``: spend and counts from ``mai.imagen_usage``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

import click
import psycopg

from imagen_pipeline.cli.errors import EXIT_FAILED, CliError
from imagen_pipeline.db.connection import DATABASE_URL_ENV, connect
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.usage.report import GroupBy, format_report, usage_lines

DEFAULT_DAYS = 30


@click.command()
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help=f"First UTC day to include, YYYY-MM-DD (default: {DEFAULT_DAYS} days ago).",
)
@click.option(
    "--by",
    "group_by",
    type=click.Choice(get_args(GroupBy)),
    default="backend",
    show_default=True,
    help="Group by backend instance, model or owner.",
)
@click.option("--dsn", help=f"libpq URL of the database; default: ${DATABASE_URL_ENV}.")
def usage(since: datetime | None, group_by: GroupBy, dsn: str | None) -> None:
    """Print spend and image counts per backend, model or owner."""
    first_day = (since or datetime.now(UTC) - timedelta(days=DEFAULT_DAYS)).date()
    try:
        with connect(dsn) as conn:
            lines = usage_lines(conn, first_day, group_by)
    except ImagenError as error:
        raise CliError(str(error)) from None
    except psycopg.Error as error:
        detail = " ".join(str(error).split())
        raise CliError(f"cannot read mai.imagen_usage: {detail}", EXIT_FAILED) from None
    click.echo(format_report(lines, first_day, group_by))

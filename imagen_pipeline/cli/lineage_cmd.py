"""``imagen lineage``: what an image was made from, and what was made from it."""

from __future__ import annotations

import click
import psycopg

from imagen_pipeline.cli.errors import EXIT_FAILED, CliError
from imagen_pipeline.cloud.lineage import format_lineage, lineage
from imagen_pipeline.db.connection import DATABASE_URL_ENV, connect
from imagen_pipeline.errors import ImagenError


@click.command(name="lineage")
@click.argument("image_id", type=click.IntRange(min=1))
@click.option("--dsn", help=f"libpq URL of the database; default: ${DATABASE_URL_ENV}.")
def lineage_command(image_id: int, dsn: str | None) -> None:
    """Print an image's ancestors and descendants (imagen.images ids) as trees."""
    try:
        with connect(dsn) as conn:
            trees = lineage(conn, image_id)
    except ImagenError as error:
        raise CliError(str(error)) from None
    except psycopg.Error as error:
        detail = " ".join(str(error).split())
        raise CliError(f"cannot read imagen.image_parents: {detail}", EXIT_FAILED) from None
    if trees is None:
        raise CliError(f"there is no image {image_id} in imagen.images", EXIT_FAILED)
    click.echo(format_lineage(*trees))

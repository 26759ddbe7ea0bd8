"""``imagen housekeeping``: the retention clean-up now, on this host's Dagster instance."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import click

from imagen_pipeline.cli.errors import EXIT_FAILED, CliError


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="imagen.yaml")
@click.option(
    "--older-than",
    help="Take every finished run and staging record older than this (30d, 12h, 0s: "
    "everything finished) instead of the ages in imagen.yaml's retention: block.",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
def housekeeping(config_path: str | None, older_than: str | None, dry_run: bool) -> None:
    """Delete finished runs past their age and sweep the staging folder."""
    from imagen_pipeline.cli.instance import cli_instance
    from imagen_pipeline.config.ages import parse_age
    from imagen_pipeline.db.connection import DATABASE_URL_ENV
    from imagen_pipeline.errors import ImagenError
    from imagen_pipeline.generate.setup import load_setup
    from imagen_pipeline.housekeeping.cleanup import clean_up

    try:
        age = parse_age(older_than, "--older-than") if older_than is not None else None
    except ValueError as error:
        raise CliError(str(error)) from None
    try:
        setup = load_setup(config_path)
    except ImagenError as error:
        raise CliError(str(error)) from None
    with cli_instance() as instance:
        try:
            result = clean_up(
                instance,
                setup.config.retention,
                setup.output_dir,
                os.environ.get(DATABASE_URL_ENV) or None,
                datetime.now(UTC),
                older_than=age,
                dry_run=dry_run,
            )
        except ImagenError as error:
            raise CliError(str(error), EXIT_FAILED) from None
    click.echo(result.summary())

"""Entry point of the ``imagen`` command."""

from __future__ import annotations

import click

from imagen_pipeline import __version__
from imagen_pipeline.cli.backends_cmd import backends
from imagen_pipeline.cli.config_cmd import config
from imagen_pipeline.cli.db_cmd import db
from imagen_pipeline.cli.generate import generate
from imagen_pipeline.cli.queue_cmd import queue
from imagen_pipeline.cli.usage_cmd import usage


@click.group()
@click.version_option(__version__, prog_name="imagen")
def cli() -> None:
    """Model-agnostic image generation through Dagster."""


cli.add_command(generate)
cli.add_command(config)
cli.add_command(backends)
cli.add_command(db)
cli.add_command(queue)
cli.add_command(usage)

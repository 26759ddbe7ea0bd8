"""``imagen config sample`` and ``imagen config validate``."""

from __future__ import annotations

from importlib import resources

import click

from imagen_pipeline.cli.errors import CliError
from imagen_pipeline.config.loader import load_config
from imagen_pipeline.errors import ConfigError


def sample_config_text() -> str:
    """The commented sample ``imagen.yaml`` shipped with the package."""
    return resources.files("imagen_pipeline.config").joinpath("sample.yaml").read_text("utf-8")


@click.group()
def config() -> None:
    """Inspect and check imagen.yaml."""


@config.command()
def sample() -> None:
    """Print a commented sample imagen.yaml."""
    click.echo(sample_config_text(), nl=False)


@config.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def validate(file: str | None) -> None:
    """Check FILE (default: the config imagen would use) and summarise it."""
    try:
        loaded = load_config(file)
    except ConfigError as error:
        raise CliError(str(error)) from None
    names = ", ".join(
        f"{name} ({instance.type_name})" for name, instance in sorted(loaded.backends.items())
    )
    click.echo(f"{loaded.source_label}: ok")
    click.echo(f"  default_backend: {loaded.config.default_backend}")
    click.echo(f"  backends: {names}")
    click.echo(f"  output: {loaded.output_dir} (naming {loaded.config.output.naming!r})")

"""``imagen config sample`` and ``imagen config validate``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from imagen_pipeline.cli.errors import CliError
from imagen_pipeline.errors import ConfigError

# `imagen config sample` prints a file: the loader (every adapter, httpx, websockets) and
# Dagster are imported by the commands that need them, inside them, so it starts at once
# (`sample --write` imports the loader for its default path only when it writes).


def sample_config_text() -> str:
    """The commented sample ``imagen.yaml`` shipped with the package."""
    return resources.files("imagen_pipeline.config").joinpath("sample.yaml").read_text("utf-8")


@click.group()
def config() -> None:
    """Inspect and check imagen.yaml."""


@config.command()
@click.option(
    "--write",
    "write_to",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[PATH]",
    help="Write the sample to PATH instead of printing it (default: the file imagen reads, "
    "$XDG_CONFIG_HOME/imagen.yaml or ~/.config/imagen.yaml); missing folders are created.",
)
@click.option("--force", is_flag=True, help="With --write: replace an existing file.")
def sample(write_to: str | None, force: bool) -> None:
    """Print a commented sample imagen.yaml (--write: save it where imagen reads it)."""
    if write_to is None:
        if force:
            raise CliError("--force applies to --write only")
        click.echo(sample_config_text(), nl=False)
        return
    from imagen_pipeline.config.loader import user_config_path

    path = Path(write_to).expanduser() if write_to else user_config_path()
    if path.is_dir():
        raise CliError(f"{path} is a folder; give the path of the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w" if force else "x", encoding="utf-8") as file:
            file.write(sample_config_text())
    except FileExistsError:
        raise CliError(f"{path} already exists; add --force to replace it") from None
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from None
    click.echo(f"wrote {path}")
    if path.resolve() != user_config_path().resolve():
        click.echo(f"imagen reads it with --config {path} or IMAGEN_CONFIG={path}")


@config.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--apply",
    "dagster_yaml",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Set the limits: the imagen_gpu pool on the Dagster instance ($DAGSTER_HOME) and the "
    "GPU run limit in this dagster.yaml.",
)
def limits(file: str | None, dagster_yaml: Path | None) -> None:
    """The Dagster limits FILE's GPU backends need: the imagen_gpu op pool (every slot of
    every box) and the run-queue limit on GPU runs (one more)."""
    from imagen_pipeline.backends.capacity import GPU_POOL, gpu_capacity, set_gpu_run_limit
    from imagen_pipeline.generate.setup import load_setup

    try:
        capacity = gpu_capacity(load_setup(file).backends)
    except ConfigError as error:
        raise CliError(str(error)) from None
    boxes = ", ".join(f"{where} {count}" for where, count in sorted(capacity.slots.items()))
    click.echo(f"{GPU_POOL} op pool: {capacity.op_pool_limit} ({boxes or 'no GPU backend'})")
    click.echo(f"GPU runs in the run queue (tag imagen/pool={GPU_POOL}): {capacity.run_limit}")
    if dagster_yaml is None:
        click.echo(f"apply: dagster instance concurrency set {GPU_POOL} {capacity.op_pool_limit}")
        click.echo(
            f"       and limit: {capacity.run_limit} for imagen/pool={GPU_POOL} in dagster.yaml"
        )
        click.echo("   or: imagen config limits --apply $DAGSTER_HOME/dagster.yaml")
        return
    if not set_gpu_run_limit(dagster_yaml, capacity.run_limit):
        raise CliError(
            f"{dagster_yaml}: no tag_concurrency_limits entry for imagen/pool={GPU_POOL} "
            "(copy it from scripts/dagster.postgres.yaml)"
        )
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(GPU_POOL, capacity.op_pool_limit)
    click.echo(
        f"set: {GPU_POOL} = {capacity.op_pool_limit} on the instance; GPU run limit "
        f"{capacity.run_limit} in {dagster_yaml} (restart dagster-daemon to use it)"
    )


@config.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def validate(file: str | None) -> None:
    """Check FILE (default: the config imagen would use) and summarise it."""
    from imagen_pipeline.generate.setup import load_setup

    try:
        setup = load_setup(file)
    except ConfigError as error:
        raise CliError(str(error)) from None
    loaded = setup.loaded
    names = ", ".join(
        f"{name} ({setup.backend(name).type_name})" for name in setup.backends.names()
    )
    click.echo(f"{loaded.source_label}: ok")
    click.echo(f"  default_backend: {loaded.config.default_backend}")
    click.echo(f"  backends: {names}")
    click.echo(f"  output: {loaded.output_dir} (naming {loaded.config.output.naming!r})")

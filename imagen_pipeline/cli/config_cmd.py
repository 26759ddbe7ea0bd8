"""``imagen config sample`` and ``imagen config validate``."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import click

from imagen_pipeline.cli.errors import CliError
from imagen_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from imagen_pipeline.instance.pool_limits import PoolInForce

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
    help="Set the limits: both pools on the Dagster instance ($DAGSTER_HOME) and the GPU run "
    "limit in this dagster.yaml.",
)
def limits(file: str | None, dagster_yaml: Path | None) -> None:
    """The Dagster limits FILE's backends need beside the limits in force: the imagen_gpu op
    pool (every slot of every GPU box), the imagen_cloud op pool and the run-queue limit on
    GPU runs (one more than imagen_gpu)."""
    from imagen_pipeline.backends.capacity import CLOUD_POOL, GPU_POOL, gpu_capacity, pool_limits
    from imagen_pipeline.generate.setup import load_setup

    try:
        capacity = gpu_capacity(load_setup(file).backends)
    except ConfigError as error:
        raise CliError(str(error)) from None
    computed = pool_limits(capacity)
    why = {GPU_POOL: capacity.where, CLOUD_POOL: "cloud generations at once, fixed"}
    if dagster_yaml is not None:
        _apply_limits(computed, capacity.run_limit, dagster_yaml)
    in_force = _limits_in_force(computed)
    if isinstance(in_force, str):
        for pool, limit in computed.items():
            click.echo(f"{pool} op pool: {limit} ({why[pool]}); in force: {in_force}")
        click.echo(
            f"GPU runs in the run queue (tag imagen/pool={GPU_POOL}): {capacity.run_limit}; "
            f"in force: {in_force}"
        )
        return
    pools, run_limit = in_force
    for pool in pools:
        mark = ": differs" if pool.state == "differs" else ""
        click.echo(
            f"{pool.pool} op pool: {pool.computed} ({why[pool.pool]}); "
            f"in force {pool.in_force()}{mark}"
        )
    run_in_force = "none in dagster.yaml" if run_limit is None else f"{run_limit} (dagster.yaml)"
    run_mark = "" if run_limit == capacity.run_limit else ": differs"
    click.echo(
        f"GPU runs in the run queue (tag imagen/pool={GPU_POOL}): {capacity.run_limit}; "
        f"in force {run_in_force}{run_mark}"
    )
    if any(pool.state != "ok" for pool in pools) or run_mark:
        click.echo(
            "apply: imagen config limits --apply $DAGSTER_HOME/dagster.yaml (then restart "
            "dagster-daemon); imagen worker sets pools that are not set when it starts"
        )


def _limits_in_force(computed: dict[str, int]) -> tuple[list[PoolInForce], int | None] | str:
    """The pools and the GPU run limit in force on the instance in ``$DAGSTER_HOME``, or why
    they cannot be read (Dagster is imported only when there is an instance to read)."""
    if not os.environ.get("DAGSTER_HOME"):
        return "unknown (DAGSTER_HOME is not set)"
    from dagster import DagsterInstance

    from imagen_pipeline.instance.pool_limits import gpu_run_limit_in_force, pools_in_force

    try:
        with DagsterInstance.get() as instance:
            return pools_in_force(instance, computed), gpu_run_limit_in_force(instance)
    except Exception as error:  # any storage or config error: the limits stay unknown
        return f"unknown (the instance in $DAGSTER_HOME cannot be read: {error})".splitlines()[0]


def _apply_limits(computed: dict[str, int], run_limit: int, dagster_yaml: Path) -> None:
    """Set both pools on the instance and the GPU run limit in ``dagster_yaml``."""
    from imagen_pipeline.backends.capacity import GPU_POOL, set_gpu_run_limit

    if not os.environ.get("DAGSTER_HOME"):
        raise CliError("--apply: DAGSTER_HOME is not set: the pools live in that instance")
    if not set_gpu_run_limit(dagster_yaml, run_limit):
        raise CliError(
            f"{dagster_yaml}: no tag_concurrency_limits entry for imagen/pool={GPU_POOL} "
            "(copy it from scripts/dagster.postgres.yaml)"
        )
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        for pool, limit in computed.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    pools = ", ".join(f"{pool} = {limit}" for pool, limit in computed.items())
    click.echo(
        f"set: {pools} on the instance; GPU run limit {run_limit} in {dagster_yaml} "
        "(restart dagster-daemon to use it)"
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

"""``imagen worker``: a Celery worker that executes runs of the instance in ``$DAGSTER_HOME``
(scripts/dagster.postgres.yaml; see docs/deployment.md "More than one host")."""

from __future__ import annotations

import os
import socket

import click

from imagen_pipeline.cli.errors import EXIT_FAILED, CliError


@click.command()
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Celery queue to serve (repeatable): imagen_gpu on the GPU host; default: the "
    "launcher's default_queue.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    help="Runs at once (pool processes); default: the instance's max_concurrent_runs.",
)
@click.option(
    "--hostname",
    default=lambda: f"imagen@{socket.gethostname()}",
    show_default="imagen@<this host>",
    help="Celery node name, NAME@HOST, unique per worker; run logs and tags show it.",
)
@click.option(
    "--preload/--no-preload",
    default=True,
    show_default=True,
    help="Import the code location before starting the pool, not on each process's first run.",
)
@click.option("--loglevel", default="INFO", show_default=True, help="Celery's log level.")
def worker(
    queues: tuple[str, ...],
    concurrency: int | None,
    hostname: str,
    preload: bool,
    loglevel: str,
) -> None:
    """Execute runs sent by the Celery run launcher; runs until stopped.

    Needs DAGSTER_HOME (an instance using scripts/dagster.postgres.yaml, the same on every
    host), DAGSTER_PG_URL, IMAGEN_CELERY_BROKER_URL (default redis://127.0.0.1:6379/0) and
    the environment the runs need (IMAGEN_CONFIG, IMAGEN_DATABASE_URL, credentials).
    SIGTERM stops it after its runs finish.
    """
    if not os.environ.get("DAGSTER_HOME"):
        raise CliError(
            "DAGSTER_HOME is not set: the worker executes runs of the instance there "
            "(its dagster.yaml from scripts/dagster.postgres.yaml)"
        )
    from imagen_pipeline.instance.celery_worker import WorkerSetupError, run_worker

    try:
        run_worker(list(queues) or None, concurrency, hostname, preload, loglevel)
    except WorkerSetupError as error:
        raise CliError(str(error), EXIT_FAILED) from None

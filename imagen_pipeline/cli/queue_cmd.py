"""``imagen queue listen``: the NOTIFY fast path of the imagen.jobs queue."""

from __future__ import annotations

import getpass
import logging
import os
import signal
import socket
import threading
from types import FrameType

import click
import psycopg

from imagen_pipeline.cli.errors import EXIT_FAILED, CliError
from imagen_pipeline.db.connection import DATABASE_URL_ENV, connect, database_url
from imagen_pipeline.defs.run_submission import GraphQLRunSubmitter, WebserverError
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.setup import load_setup
from imagen_pipeline.queue import pause
from imagen_pipeline.queue.listener import listen
from imagen_pipeline.queue.repository import retry

WEBSERVER_URL_ENV = "IMAGEN_WEBSERVER_URL"


@click.group()
def queue() -> None:
    """The imagen.jobs queue."""


@queue.command("listen")
@click.option(
    "--webserver-url",
    default=lambda: os.environ.get(WEBSERVER_URL_ENV, "http://127.0.0.1:3000"),
    show_default=f"${WEBSERVER_URL_ENV} or http://127.0.0.1:3000",
    help="dagster-webserver that receives the runs.",
)
@click.option("--dsn", help=f"libpq URL of the imagen database; default: ${DATABASE_URL_ENV}.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="imagen.yaml")
def listen_command(webserver_url: str, dsn: str | None, config_path: str | None) -> None:
    """Launch a run as soon as a row is inserted (LISTEN imagen_jobs); runs until stopped.

    The jobs sensor keeps working without this process; the listener only removes the
    sensor's polling delay. Exits 1 at once when the webserver does not answer, is not
    Dagster's or does not serve the job; once started, a failed submission leaves the row to
    the sensor.
    """
    try:
        dsn = database_url(dsn)
        load_setup(config_path)
        submitter = GraphQLRunSubmitter(webserver_url)
    except (ImagenError, ValueError) as error:
        raise CliError(str(error)) from None
    try:
        dagster_version = submitter.check()
    except WebserverError as error:
        raise CliError(str(error), EXIT_FAILED) from None
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("imagen.queue.listener").info(
        "runs go to the Dagster webserver at %s (Dagster %s)", submitter.url, dagster_version
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    listen(dsn, lambda: load_setup(config_path), submitter, stop)


@queue.command("retry")
@click.argument("job_ids", nargs=-1, required=True, type=click.IntRange(min=1))
@click.option("--dsn", help=f"libpq URL of the imagen database; default: ${DATABASE_URL_ENV}.")
def retry_command(job_ids: tuple[int, ...], dsn: str | None) -> None:
    """Put failed jobs back in the queue (failed -> pending) while they have attempts left.

    The next run of a job re-uses the image an earlier attempt already generated, when the
    failure came after generation; only a job with nothing to re-use is generated afresh.
    Exits 1 if any job could not be retried.
    """
    refused = 0
    try:
        with connect(dsn) as conn:
            for job_id in job_ids:
                outcome = retry(conn, job_id)
                click.echo(outcome.explanation(job_id))
                refused += not outcome.retried
    except ImagenError as error:
        raise CliError(str(error)) from None
    except psycopg.Error as error:
        raise CliError(f"imagen database: {error}".strip(), EXIT_FAILED) from None
    if refused:
        raise CliError(f"{refused} of {len(job_ids)} jobs not retried", EXIT_FAILED)


def operator_name() -> str:
    """``user@host`` of whoever runs the command (recorded as ``paused_by``)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _change_pause(change: str, dsn: str | None, reason: str | None) -> None:
    try:
        with connect(dsn) as conn:
            if change == "pause":
                outcome = pause.pause(conn, reason, operator_name())
            else:
                outcome = pause.resume(conn)
    except (ImagenError, ValueError) as error:
        raise CliError(str(error)) from None
    except psycopg.Error as error:
        raise CliError(f"imagen database: {error}".strip(), EXIT_FAILED) from None
    click.echo(outcome.line())


@queue.command("pause")
@click.option(
    "--reason",
    help=f"Why, in words for the users (at most {pause.REASON_MAX_CHARS} characters); web "
    "clients read it through imagen.queue_status().",
)
@click.option("--dsn", help=f"libpq URL of the imagen database; default: ${DATABASE_URL_ENV}.")
def pause_command(reason: str | None, dsn: str | None) -> None:
    """Stop claiming jobs: pending rows stay pending, queued and running jobs finish.

    Kept in the imagen database, so the pause survives restarts of every process; the jobs
    sensor and the listener claim nothing until imagen queue resume.
    """
    _change_pause("pause", dsn, reason)


@queue.command("resume")
@click.option("--dsn", help=f"libpq URL of the imagen database; default: ${DATABASE_URL_ENV}.")
def resume_command(dsn: str | None) -> None:
    """End a pause: the sensor's next tick claims the pending jobs."""
    _change_pause("resume", dsn, None)

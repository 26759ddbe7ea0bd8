"""Failures of the imagen database, worded for where they happen.

The same outage means different things at different moments: before a backend call no image
exists yet, after one the image is made but not recorded. :func:`database_errors` names the
moment (a :class:`DatabaseStep`), so the operator's message says what the pipeline was doing
and the job's owner reads a sentence that is true at that point.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import psycopg

from imagen_pipeline.db.connection import DATABASE_URL_ENV
from imagen_pipeline.errors import ImagenError


class DatabaseStep(Enum):
    """Where the pipeline talks to the imagen database: what it was doing, and what the
    owner of a queued job may read when the database fails there."""

    CLAIM = (
        "claiming pending imagen.jobs rows",
        "the queue could not be read right now; the job waits and starts when it can",
    )
    OWNERSHIP = (
        "taking the job for its run",
        "the job could not be started because the pipeline's database did not answer; "
        "no image was made; retry the job later",
    )
    SOURCES = (
        "reading the image rows the request names as sources",
        "the job's source images could not be looked up because the pipeline's database did "
        "not answer; no image was made; retry the job later",
    )
    BUDGET = (
        "checking today's budget",
        "today's budget could not be checked because the pipeline's database did not answer, "
        "so no image was made; retry the job later",
    )
    RECORDING = (
        "recording the image and usage rows",
        "the image was made but could not be recorded right now; retry the job later",
    )
    FAILED_CALL = (
        "recording a failed generation",
        "a failed image generation could not be recorded; retry the job later",
    )

    HOUSEKEEPING = (
        "reading which imagen.jobs rows have ended, for housekeeping",
        "no job is affected",
    )

    def __init__(self, action: str, public: str) -> None:
        self.action = action
        self.public = public


class DatabaseUnavailableError(ImagenError):
    """The imagen database failed (unreachable, connection lost, deadlock); a retry can
    help. The message names the step, host and port (libpq's text, never a password)."""

    transient = True

    def __init__(self, step: DatabaseStep, detail: str, url_env: str = DATABASE_URL_ENV) -> None:
        super().__init__(
            f"imagen database (${url_env}) failed while {step.action}: {detail}",
            public=step.public,
        )
        self.step = step


@contextmanager
def database_errors(step: DatabaseStep, url_env: str = DATABASE_URL_ENV) -> Iterator[None]:
    """Turn operational database failures inside the block into a
    :class:`DatabaseUnavailableError` for ``step``."""
    try:
        yield
    except psycopg.OperationalError as error:
        raise DatabaseUnavailableError(step, " ".join(str(error).split()), url_env) from None

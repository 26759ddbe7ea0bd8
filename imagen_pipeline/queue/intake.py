"""Admitting claimed ``imagen.jobs`` rows, one at a time, so one row only affects itself.

The sensor and the NOTIFY listener both claim rows and then hand each one here. A row whose
content cannot run is failed with a sentence naming the field and what is allowed (the
error's ``public`` text: no server paths, no configuration); every other row gets its plan.
Nothing a row contains can make this raise: only database failures propagate, and those
leave claimed rows to the sensor's reconciliation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from imagen_pipeline import generate
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.setup import Setup
from imagen_pipeline.queue import repository
from imagen_pipeline.queue.rows import JobRow

UNREADABLE = "the pipeline could not read this job; the operators can see why in its logs"

logger = logging.getLogger("imagen.queue.intake")


@dataclass(frozen=True)
class Admitted:
    """A claimed row that can run, with its plan."""

    row: JobRow
    plan: GenerationPlan


@dataclass(frozen=True)
class Refused:
    """A claimed row that was failed: ``public`` went into the row, ``detail`` is for logs."""

    row: JobRow
    public: str
    detail: str


def admit(conn: psycopg.Connection, row: JobRow, config: Setup) -> Admitted | Refused:
    """Plan a claimed row, or fail it with its reason (also when it names another owner's
    images, before any run)."""
    try:
        return Admitted(row, generate.plan(row.to_spec(), config, conn))
    except ImagenError as error:
        refused = Refused(row, error.public, str(error))
    except psycopg.Error:
        raise
    except Exception as error:
        logger.exception("imagen.jobs row %s could not be planned", row.id)
        refused = Refused(row, UNREADABLE, f"unexpected {type(error).__name__}: {error}")
    repository.fail(conn, row.id, refused.public)
    return refused


@dataclass(frozen=True)
class Batch:
    """What one intake pass did: rows to launch, rows refused, rows out of attempts."""

    admitted: list[Admitted]
    refused: list[Refused]
    exhausted: list[int]


def take_batch(conn: psycopg.Connection, limit: int, config: Setup) -> Batch:
    """Fail pending rows without attempts left, claim up to ``limit`` rows (fairly, see
    :func:`~imagen_pipeline.queue.repository.claim_pending`), admit each."""
    exhausted = repository.fail_exhausted(conn)
    admitted: list[Admitted] = []
    refused: list[Refused] = []
    per_owner = config.config.queue.max_in_flight_per_owner
    for row in repository.claim_pending(conn, limit, per_owner, config.config.default_backend):
        outcome = admit(conn, row, config)
        if isinstance(outcome, Admitted):
            admitted.append(outcome)
        else:
            refused.append(outcome)
    return Batch(admitted=admitted, refused=refused, exhausted=exhausted)

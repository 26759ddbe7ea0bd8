"""The NOTIFY fast path: launch a run the moment a row is inserted into ``imagen.jobs``.

Dagster's sensor daemon evaluates sensors at most every 5 seconds, which adds 2.5 s on
average to every job. The listener LISTENs on the ``imagen_jobs`` channel (fed by the
table's AFTER INSERT trigger), claims the row exactly as the sensor would (pending ->
queued, one statement guarded by the row's state, so the two never both win; a row whose
owner already has ``queue.max_in_flight_per_owner`` jobs in flight, or that a hold keeps
pending (:mod:`imagen_pipeline.queue.holds`), is left to the sensor; while the queue is
paused (:mod:`imagen_pipeline.queue.pause`) the claim takes nothing)
and submits the run through a :class:`RunSubmitter`. When submission fails the claim is released
(queued -> pending, the attempt not counted) and the sensor, which stays the safety net,
picks the row up on its next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import psycopg

from imagen_pipeline.db.connection import connect
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.setup import Setup
from imagen_pipeline.queue import pause, repository
from imagen_pipeline.queue.intake import Refused, admit
from imagen_pipeline.queue.rows import JobRow

CHANNEL = "imagen_jobs"
RELEASED = "waiting for the pipeline: the fast path could not start a run; the sensor will"
RECONNECT_DELAYS_S = (0.5, 1, 2, 5, 10, 30)

logger = logging.getLogger("imagen.queue.listener")


class RunSubmitter(Protocol):
    """Something that starts a ``generate_image`` run for a claimed row; returns the run id."""

    def submit(self, row: JobRow, plan: GenerationPlan) -> str: ...


def handle_notification(
    conn: psycopg.Connection,
    payload: str,
    load_setup: Callable[[], Setup],
    submitter: RunSubmitter,
) -> str:
    """Claim and launch the row named by one notification; returns what happened."""
    try:
        job_id = int(payload)
    except ValueError:
        return f"ignored notification {payload!r} (not a job id)"
    try:
        config = load_setup()
    except ImagenError as error:
        return f"row {job_id}: imagen.yaml cannot be loaded, left for the sensor: {error}"
    per_owner = config.config.queue.max_in_flight_per_owner
    row = repository.claim_job(conn, job_id, per_owner, config.config.default_backend)
    if row is None:
        current = repository.get_job(conn, job_id)
        if current is not None and current.status == "pending":
            state = pause.current(conn)
            if state.paused:
                return f"row {job_id} waits: the queue is {state.describe()}"
            return (
                f"row {job_id} waits: held (imagen.job_holds) or its owner has "
                f"queue.max_in_flight_per_owner ({per_owner}) jobs in flight; the sensor "
                "claims it when it can"
            )
        return f"row {job_id} already claimed or not pending"
    outcome = admit(conn, row, config)
    if isinstance(outcome, Refused):
        return f"row {job_id} rejected: {outcome.detail}"
    plan = outcome.plan
    try:
        run_id = submitter.submit(row, plan)
    except Exception as error:
        repository.release_claim(conn, row.id, row.claims, RELEASED)
        cause = error if isinstance(error, ImagenError) else f"{type(error).__name__}: {error}"
        return f"row {job_id}: run submission failed, left for the sensor: {cause}"
    return f"row {job_id}: submitted run {run_id} (claim {row.claims})"


def listen(
    dsn: str | None,
    load_setup: Callable[[], Setup],
    submitter: RunSubmitter,
    stop: threading.Event,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve notifications until ``stop`` is set, reconnecting when the database goes away."""
    failures = 0
    while not stop.is_set():
        try:
            with connect(dsn, autocommit=True) as listen_conn, connect(dsn) as work_conn:
                listen_conn.execute(f"LISTEN {CHANNEL}")
                logger.info("listening on channel %s", CHANNEL)
                failures = 0
                if on_ready is not None:
                    on_ready()
                while not stop.is_set():
                    for notify in listen_conn.notifies(timeout=1.0):
                        logger.info(
                            handle_notification(work_conn, notify.payload, load_setup, submitter)
                        )
                        if stop.is_set():
                            break
        except psycopg.OperationalError as error:
            delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
            failures += 1
            logger.warning("database connection lost (%s); reconnecting in %ss", error, delay)
            stop.wait(delay)
        except Exception:
            logger.exception("listener error; restarting in 1s")
            time.sleep(1)

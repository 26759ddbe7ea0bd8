"""SQL state transitions of ``imagen.jobs``.

Every transition is one atomic statement guarded by the row's current state, so concurrent
callers (the sensor, the NOTIFY fast path, run workers, a user cancelling in the web UI)
can never both win:

- ``claim``: pending -> queued, ``attempts`` + 1 and ``claims`` + 1 (the number the
  claim's runs carry; nothing takes one off, so every claim's runs are told apart), only
  for rows with attempts left and nothing holding them (:mod:`imagen_pipeline.queue.holds`),
  by priority, owners in turn and age (the line ``imagen.claim_order``), at most
  ``queue.max_in_flight_per_owner`` in flight per owner (claims are serialized by an
  advisory lock), nothing while the queue is paused (:mod:`imagen_pipeline.queue.pause`);
  ``fail_exhausted`` fails pending rows without any;
- ``take_ownership``: queued (this claim) -> running with this run's id, or hand a
  running/failed row from a run to its retry or re-execution (``parent_run_id``);
- ``finish``: running -> done, only by the owning run;
- ``fail`` / ``requeue_lost`` / ``note_waiting`` / ``close_cancel``: used by the sensor's
  reconciliation (``requeue_lost`` and ``fail(..., refund=True)`` give the attempt back:
  an outage or the server's own fault is not the job's);
- ``release_claim``: queued -> pending when the NOTIFY listener could not submit the run;
- ``retry``: failed or canceled -> pending while attempts are left (``imagen queue retry``;
  a web client does the same with an UPDATE, checked by the database's ``jobs_client_transition``).

No statement here can fail because of what a client wrote into a row: the database's rules
keep every column in range (``attempts + 1`` cannot overflow), ``backend_opts`` is read as
text and parsed per row (:mod:`imagen_pipeline.queue.rows`), and error texts are cut to
``ERROR_MAX_CHARS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from imagen_pipeline.queue.rows import ERROR_MAX_CHARS, MAX_ATTEMPTS, JobRow, job_columns

INFLIGHT_STATUSES = ("queued", "running")
LOST_RETRY_FIRST_S = 5
LOST_RETRY_LONGEST_S = 300
JOB_COLUMNS = job_columns()


def _rows(cursor: psycopg.Cursor) -> list[JobRow]:
    return sorted((JobRow.from_db(record) for record in cursor.fetchall()), key=lambda r: r.id)


def _error_text(text: str) -> str:
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "\u2026"


def fail_exhausted(conn: psycopg.Connection) -> list[int]:
    """Fail pending rows that have no attempts left (set so by hand); returns their ids."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            UPDATE imagen.jobs
               SET status = 'failed', finished_at = now(),
                   error = 'attempts: all ' || attempts || ' attempts are used; '
                           || 'this job cannot run again'
             WHERE status = 'pending' AND attempts >= %(max)s
            RETURNING id
            """,
            {"max": MAX_ATTEMPTS},
        )
        return sorted(row[0] for row in cursor.fetchall())


CLAIM_LOCK = 7_305_148_210
"""Advisory lock key that serializes claims (sensor and listener), so two claimers never
both see an owner below its in-flight limit and push it over."""

_CLAIM = f"""
    UPDATE imagen.jobs AS j
       SET status = 'queued', attempts = j.attempts + 1, claims = j.claims + 1, run_id = NULL,
           retry_at = NULL,
           progress = NULL, progress_text = NULL
      FROM (SELECT o.id, o.turn, o.place FROM imagen.claim_order(%(default)s) AS o
             WHERE NOT EXISTS (SELECT 1 FROM imagen.queue_state AS s WHERE s.paused)
               AND (%(cap)s::integer IS NULL OR o.turn <= %(cap)s)
               AND (%(only_id)s::bigint IS NULL OR o.id = %(only_id)s)
             ORDER BY o.place
             LIMIT %(limit)s) AS claimed
     WHERE j.id = claimed.id AND j.status = 'pending'
    RETURNING {job_columns("j")}, claimed.place
"""
"""The claim: the first ``limit`` rows of the line (``imagen.claim_order``, the one
definition of the order, which ``imagen.my_queue()`` reports to clients too), nothing while
the queue is paused (``imagen.queue_state``)."""

_NOTE_DEFAULT = """
    UPDATE imagen.queue_state SET default_backend = %(default)s
     WHERE default_backend IS DISTINCT FROM %(default)s
"""


def _claim(
    conn: psycopg.Connection,
    limit: int,
    per_owner: int | None,
    only_id: int | None,
    default_backend: str,
) -> list[JobRow]:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
        cursor.execute(_NOTE_DEFAULT, {"default": default_backend})
        cursor.execute(
            _CLAIM,
            {"limit": limit, "cap": per_owner, "only_id": only_id, "default": default_backend},
        )
        records = sorted(cursor.fetchall(), key=lambda r: r["place"])
    return [JobRow.from_db(record) for record in records]


def claim_pending(
    conn: psycopg.Connection, limit: int, per_owner: int | None, default_backend: str
) -> list[JobRow]:
    """Move up to ``limit`` pending rows with attempts left and no hold to queued; return
    them in the order they should start (the order their runs are created in).

    Order: priority (highest first), then owners in turn (the owner with the fewest jobs in
    flight first), then age. An owner (rows without one count as one owner) never has more
    than ``per_owner`` rows queued or running; None: no limit. A row without a backend is
    held by ``default_backend``'s holds.
    """
    return _claim(conn, limit, per_owner, None, default_backend)


def claim_job(
    conn: psycopg.Connection, job_id: int, per_owner: int | None, default_backend: str
) -> JobRow | None:
    """Move one pending row to queued (the NOTIFY fast path) if nothing holds it and its
    owner is below ``per_owner`` jobs in flight; None if someone else has it, it is held or
    the owner is at the limit (the sensor claims it when it can)."""
    rows = _claim(conn, 1, per_owner, job_id, default_backend)
    return rows[0] if rows else None


def get_job(conn: psycopg.Connection, job_id: int) -> JobRow | None:
    """The row with ``job_id``, or None."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(f"SELECT {JOB_COLUMNS} FROM imagen.jobs WHERE id = %s", (job_id,))
        record = cursor.fetchone()
    conn.commit()
    return JobRow.from_db(record) if record else None


@dataclass(frozen=True)
class Ownership:
    """Outcome of :func:`take_ownership`: whether this run may work on the row, and why not."""

    owned: bool
    row: JobRow | None

    def refusal(self, job_id: int, run_id: str) -> str:
        """Why the run may not proceed, for the run's failure message."""
        if self.row is None:
            return f"imagen.jobs row {job_id} does not exist"
        return (
            f"imagen.jobs row {job_id} is {self.row.status} (claim {self.row.claims}, "
            f"run {self.row.run_id or 'none'}); run {run_id} no longer owns it"
        )


def take_ownership(
    conn: psycopg.Connection,
    job_id: int,
    claim: int | None,
    run_id: str,
    parent_run_id: str | None,
    *,
    finished_work: bool = False,
) -> Ownership:
    """Mark the row running for ``run_id`` if this run may work on it.

    Allowed when the row is queued for this ``claim`` (the run's ``imagen/job_attempt``),
    already owned by ``run_id``, or owned (running or failed) by ``parent_run_id``: a run
    retry or a re-execution takes over from its parent. Anything else (a newer claim, done,
    canceled) is refused, which is what keeps a job at one image.

    ``finished_work``: the caller only repeats work that is idempotent once the image exists
    (storing, recording). Such a step of a re-execution may also take over a row its parent
    already marked done (the parent's worker died after the commit), so the row and the run
    that completed it agree; the row stays done.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            f"""
            UPDATE imagen.jobs
               SET status = CASE WHEN status = 'done' THEN 'done' ELSE 'running' END,
                   run_id = %(run_id)s,
                   error = CASE WHEN status = 'done' THEN error END,
                   progress_text = CASE WHEN status = 'queued' THEN NULL
                                        ELSE progress_text END,
                   started_at = coalesce(started_at, now()),
                   finished_at = CASE WHEN status = 'done' THEN finished_at END
             WHERE id = %(id)s
               AND (   (status = 'queued' AND claims = %(claim)s)
                    OR (status = 'running' AND run_id = %(run_id)s)
                    OR (status IN ('running', 'failed') AND run_id = %(parent)s)
                    OR (%(finished_work)s AND status = 'done'
                        AND run_id IN (%(run_id)s, %(parent)s)))
            RETURNING {JOB_COLUMNS}
            """,
            {
                "id": job_id,
                "claim": claim,
                "run_id": run_id,
                "parent": parent_run_id,
                "finished_work": finished_work,
            },
        )
        rows = _rows(cursor)
    if rows:
        return Ownership(owned=True, row=rows[0])
    return Ownership(owned=False, row=get_job(conn, job_id))


def finish(conn: psycopg.Connection, job_id: int, run_id: str, image_id: int | None) -> bool:
    """running -> done for the owning run (again, if it is already done), linking the image."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            UPDATE imagen.jobs
               SET status = 'done', image_id = coalesce(%(image_id)s, image_id),
                   finished_at = coalesce(finished_at, now()), error = NULL,
                   progress = 1, progress_text = 'done'
             WHERE id = %(id)s AND run_id = %(run_id)s AND status IN ('running', 'done')
            """,
            {"id": job_id, "run_id": run_id, "image_id": image_id},
        )
        return cursor.rowcount == 1


@dataclass(frozen=True)
class RetryOutcome:
    """Outcome of :func:`retry`: whether the row went back to pending, and why not."""

    retried: bool
    row: JobRow | None

    def explanation(self, job_id: int) -> str:
        """One sentence on what happened."""
        if self.row is None:
            return f"imagen.jobs row {job_id} does not exist"
        if self.retried:
            return (
                f"imagen.jobs row {job_id} is pending again "
                f"(attempt {self.row.attempts + 1} of {MAX_ATTEMPTS} comes next)"
            )
        if self.row.status == "canceled" and self.row.finished_at is None:
            return (
                f"imagen.jobs row {job_id} is still being canceled; retry it once its run stopped"
            )
        if self.row.status not in ("failed", "canceled"):
            return (
                f"imagen.jobs row {job_id} is {self.row.status}; "
                "only a failed or canceled job is retried"
            )
        return f"imagen.jobs row {job_id} has used all {MAX_ATTEMPTS} attempts"


def retry(conn: psycopg.Connection, job_id: int) -> RetryOutcome:
    """failed (or canceled, once its run stopped) -> pending while attempts are left; the
    next claim starts attempt + 1.

    The run of that attempt re-uses an image an earlier attempt already generated
    (:mod:`imagen_pipeline.generate.staging`), so a job that failed after generation is not
    generated twice.
    """
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            f"""
            UPDATE imagen.jobs
               SET status = 'pending', finished_at = NULL, progress = NULL, progress_text = NULL
             WHERE id = %(id)s AND attempts < %(max)s
               AND (status = 'failed' OR (status = 'canceled' AND finished_at IS NOT NULL))
            RETURNING {JOB_COLUMNS}
            """,
            {"id": job_id, "max": MAX_ATTEMPTS},
        )
        rows = _rows(cursor)
    if rows:
        return RetryOutcome(retried=True, row=rows[0])
    return RetryOutcome(retried=False, row=get_job(conn, job_id))


def fail(
    conn: psycopg.Connection,
    job_id: int,
    error: str,
    from_statuses: Sequence[str] = ("pending", "queued", "running"),
    *,
    refund: bool = False,
) -> bool:
    """Mark the row failed with ``error`` unless it moved on (done, canceled) meanwhile;
    ``refund``: the failure was not the request's, so its attempt does not count."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            UPDATE imagen.jobs
               SET status = 'failed', error = %(error)s, finished_at = now(),
                   attempts = CASE WHEN %(refund)s THEN greatest(attempts - 1, 0)
                                   ELSE attempts END
             WHERE id = %(id)s AND status = ANY(%(statuses)s)
            """,
            {
                "id": job_id,
                "error": _error_text(error),
                "statuses": list(from_statuses),
                "refund": refund,
            },
        )
        return cursor.rowcount == 1


def requeue_lost(conn: psycopg.Connection, job_id: int, claim: int, text: str) -> bool:
    """In-flight row of ``claim`` whose run was lost to an outage -> pending again, its
    attempt given back and ``interruptions`` + 1, ``text`` (why it waits) in
    ``progress_text``, claimed again no sooner than ``retry_at`` (5 s after the first
    interruption, doubling up to 5 min); ``error`` is left as it was."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            UPDATE imagen.jobs
               SET status = 'pending', run_id = NULL, attempts = greatest(attempts - 1, 0),
                   interruptions = interruptions + 1, progress = NULL,
                   progress_text = %(text)s,
                   retry_at = now() + make_interval(
                       secs => least(%(longest)s, %(first)s * power(2, interruptions)))
             WHERE id = %(id)s AND claims = %(claim)s AND status IN ('queued', 'running')
            """,
            {
                "id": job_id,
                "claim": claim,
                "text": text,
                "first": LOST_RETRY_FIRST_S,
                "longest": LOST_RETRY_LONGEST_S,
            },
        )
        return cursor.rowcount == 1


def note_waiting(conn: psycopg.Connection, job_id: int, claim: int, text: str) -> bool:
    """Say in a queued row's ``progress_text`` why its run has not started (unless the row
    moved on or already says so)."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            UPDATE imagen.jobs SET progress_text = %(text)s
             WHERE id = %(id)s AND claims = %(claim)s AND status = 'queued'
               AND progress_text IS DISTINCT FROM %(text)s
            """,
            {"id": job_id, "claim": claim, "text": text},
        )
        return cursor.rowcount == 1


def release_claim(conn: psycopg.Connection, job_id: int, claim: int, reason: str) -> bool:
    """Undo a claim whose run could not be submitted: queued -> pending, attempt not counted
    (the claim number stays used, so a run the failed submission may still have created
    cannot take the row)."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            UPDATE imagen.jobs
               SET status = 'pending', attempts = attempts - 1, error = %(reason)s
             WHERE id = %(id)s AND claims = %(claim)s AND status = 'queued'
               AND run_id IS NULL
            """,
            {"id": job_id, "claim": claim, "reason": _error_text(reason)},
        )
        return cursor.rowcount == 1


def close_cancel(conn: psycopg.Connection, job_id: int) -> bool:
    """Record that a canceled row's run (if any) has been stopped."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            UPDATE imagen.jobs SET finished_at = now()
             WHERE id = %s AND status = 'canceled' AND finished_at IS NULL
            """,
            (job_id,),
        )
        return cursor.rowcount == 1


def unsettled_jobs(conn: psycopg.Connection, after_id: int, limit: int) -> list[JobRow]:
    """Rows the sensor must compare with their runs: in flight, or canceled and not closed."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            f"""
            SELECT {JOB_COLUMNS} FROM imagen.jobs
             WHERE id > %(after)s
               AND (status IN ('queued', 'running')
                    OR (status = 'canceled' AND finished_at IS NULL))
             ORDER BY id
             LIMIT %(limit)s
            """,
            {"after": after_id, "limit": limit},
        )
        rows = _rows(cursor)
    conn.commit()
    return rows

"""Pausing the ``imagen.jobs`` queue: nothing new is claimed, what runs finishes.

The state is the one row of ``imagen.queue_state`` in the imagen database, so a pause
outlives every process (the daemon, the listener, the host). While it is paused the claim
statement itself takes nothing (:mod:`imagen_pipeline.queue.repository`), so no claimer,
the sensor, the NOTIFY listener or one yet to be written, can start a job; pending rows stay
pending, and jobs already queued or running finish. :func:`pause` takes the claimers'
advisory lock, so a claim in progress ends before the pause is in force and the counts it
reports are the jobs that will still finish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row

from imagen_pipeline.queue.repository import CLAIM_LOCK

REASON_MAX_CHARS = 200
"""As the database's ``queue_state_reason_check``; web clients read the reason."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class QueueState:
    """Whether the queue is paused, why, since when and by whom."""

    paused: bool = False
    reason: str | None = None
    paused_at: datetime | None = None
    paused_by: str | None = None

    def since(self) -> str:
        """``since 2026-12-07 16:00 UTC by op@host`` (empty when not paused)."""
        if not self.paused:
            return ""
        when = (
            self.paused_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if self.paused_at else "?"
        )
        return f"since {when}" + (f" by {self.paused_by}" if self.paused_by else "")

    def describe(self) -> str:
        """One phrase: ``paused since … by …: <reason>``, or ``not paused``."""
        if not self.paused:
            return "not paused"
        return f"paused {self.since()}" + (f": {self.reason}" if self.reason else "")


def skip_reason(state: QueueState) -> str:
    """Why a sensor tick claimed nothing while ``state`` is paused."""
    reason = f": {state.reason}" if state.reason else ""
    return (
        f"the imagen.jobs queue is paused {state.since()}{reason}; pending jobs wait until "
        "imagen queue resume"
    )


@dataclass(frozen=True)
class QueueCounts:
    """Jobs waiting and in flight."""

    pending: int = 0
    queued: int = 0
    running: int = 0


@dataclass(frozen=True)
class PauseOutcome:
    """What :func:`pause` or :func:`resume` did: ``changed`` False when the queue already
    was in that state."""

    changed: bool
    state: QueueState
    before: QueueState
    counts: QueueCounts

    def line(self) -> str:
        """One line for the operator: what changed and what the jobs do now."""
        counts = self.counts
        flight = f"{counts.running} running and {counts.queued} queued jobs finish"
        waiting = f"{counts.pending} pending jobs wait"
        if self.state.paused:
            reason = f" (reason: {self.state.reason})" if self.state.reason else ""
            if self.changed:
                return (
                    f"paused the imagen.jobs queue{reason}: nothing new is claimed; "
                    f"{flight}, {waiting}"
                )
            return (
                f"the imagen.jobs queue was already paused {self.before.since()}; "
                f"reason now: {self.state.reason or 'none'}; {flight}, {waiting}"
            )
        if self.changed:
            return (
                f"resumed the imagen.jobs queue ({self.before.describe()}): "
                f"{counts.pending} pending jobs are claimed from the next sensor tick; "
                f"{counts.running} running, {counts.queued} queued"
            )
        return (
            f"the imagen.jobs queue is not paused; nothing changed ({counts.pending} pending, "
            f"{counts.running} running, {counts.queued} queued)"
        )


def checked_reason(reason: str | None) -> str | None:
    """``reason`` stripped (None when empty); ValueError naming the field when it is too
    long or holds control characters."""
    if reason is None or not reason.strip():
        return None
    reason = reason.strip()
    if len(reason) > REASON_MAX_CHARS:
        raise ValueError(f"reason: at most {REASON_MAX_CHARS} characters (got {len(reason)})")
    if _CONTROL.search(reason):
        raise ValueError("reason: must be one line without control characters")
    return reason


_STATE = "SELECT paused, reason, paused_at, paused_by FROM imagen.queue_state"
_COUNTS = """
    SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'queued') AS queued,
           count(*) FILTER (WHERE status = 'running') AS running
      FROM imagen.jobs WHERE status IN ('pending', 'queued', 'running')
"""


def _state(cursor: psycopg.Cursor) -> QueueState:
    cursor.execute(_STATE)
    record = cursor.fetchone()
    return QueueState(**record) if record else QueueState()


def _counts(cursor: psycopg.Cursor) -> QueueCounts:
    cursor.execute(_COUNTS)
    record = cursor.fetchone()
    return QueueCounts(**record) if record else QueueCounts()


def current(conn: psycopg.Connection) -> QueueState:
    """The queue's pause state now."""
    with conn.cursor(row_factory=dict_row) as cursor:
        state = _state(cursor)
    conn.commit()
    return state


def pause(conn: psycopg.Connection, reason: str | None, by: str) -> PauseOutcome:
    """Pause the queue (again: only the reason changes, ``paused_at`` stays) once any claim
    in progress has ended; ``by`` names who paused it (for the operator only)."""
    reason = checked_reason(reason)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
        before = _state(cursor)
        cursor.execute(
            """
            INSERT INTO imagen.queue_state AS s (paused, reason, paused_at, paused_by)
            VALUES (true, %(reason)s, now(), %(by)s)
            ON CONFLICT (id) DO UPDATE
               SET paused = true, reason = excluded.reason,
                   paused_at = CASE WHEN s.paused THEN s.paused_at ELSE now() END,
                   paused_by = CASE WHEN s.paused THEN s.paused_by ELSE excluded.paused_by END
            """,
            {"reason": reason, "by": by},
        )
        state = _state(cursor)
        counts = _counts(cursor)
    return PauseOutcome(changed=not before.paused, state=state, before=before, counts=counts)


def resume(conn: psycopg.Connection) -> PauseOutcome:
    """End the pause; the sensor's next tick claims the pending rows."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        before = _state(cursor)
        cursor.execute(
            """
            UPDATE imagen.queue_state
               SET paused = false, reason = NULL, paused_at = NULL, paused_by = NULL
             WHERE paused
            """
        )
        state = _state(cursor)
        counts = _counts(cursor)
    return PauseOutcome(changed=before.paused, state=state, before=before, counts=counts)

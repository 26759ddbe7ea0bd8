"""Holds: what keeps pending ``imagen.jobs`` rows from starting while a part is away.

An outage is not a job's fault. While the run launcher's broker is unreachable, while no
``imagen worker`` serves the queue a backend's runs go to, or while a backend's server is
down, starting those rows would only make runs that fail and spend the rows' attempts. The
jobs sensor keeps one ``imagen.job_holds`` row per such condition (kind ``broker`` on scope
``*``: every row; kind ``worker`` or ``backend`` on a backend instance's name), both
claimers skip held rows (:mod:`imagen_pipeline.queue.repository`), and each held row's
``progress_text`` says why it waits, in words for its owner. The operator's detail stays in
the hold, the sensor's log, ``imagen doctor`` and the alerts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import psycopg
from psycopg.rows import dict_row

HoldKind = Literal["broker", "worker", "backend"]
ALL = "*"

BROKER_DOWN = (
    "waiting: the pipeline is catching up after an interruption; the job starts as soon as it can"
)
NO_WORKER = "waiting: no machine for this kind of job is running yet; the job starts when one is"
BACKEND_DOWN = (
    "waiting: the image server for this job is not available; the job starts when it is back"
)
RUN_LOST = (
    "waiting: the job was interrupted by a server problem and starts again shortly; "
    "nothing is charged twice"
)
WAITING_FOR_SLOT = "waiting in line; the job starts when a slot frees up"
WAITING_FOR_WORKER = "waiting for a machine to take the job"
WAITING_FOR_SERVER = "waiting for a free slot on the image server"
HOLD_TEXTS = (BROKER_DOWN, NO_WORKER, BACKEND_DOWN)
"""The texts a hold writes into a pending row; cleared once nothing holds it."""


@dataclass(frozen=True)
class Hold:
    """One condition that keeps rows pending: ``public`` for the rows' owners, ``detail``
    for the operator."""

    kind: HoldKind
    scope: str
    public: str
    detail: str


@dataclass(frozen=True)
class LaunchPath:
    """What the run launcher can reach now.

    ``broker_error``: why runs cannot be sent (None: they can). ``workers``: live pool
    processes per worker queue; None when the launcher needs no worker (runs start as
    processes of the daemon) or the workers cannot be listed. ``default_queue``: the queue
    of runs without a queue tag.
    """

    broker_error: str | None = None
    workers: Mapping[str, int] | None = None
    default_queue: str = ""
    registry_error: str | None = None

    def serves(self, queue: str) -> bool:
        """Whether runs sent to ``queue`` can start (unknown counts as yes)."""
        return self.workers is None or self.workers.get(queue, 0) > 0


@dataclass(frozen=True)
class HoldChanges:
    """Holds that began and ended in one update."""

    began: list[Hold] = field(default_factory=list)
    ended: list[Hold] = field(default_factory=list)


def alert_key(hold: Hold) -> str:
    """The operator alert's key for ``hold`` (one open problem per hold)."""
    return f"hold:{hold.kind}:{hold.scope}"


def alert_title(hold: Hold) -> str:
    """The operator alert's title for ``hold`` (its end is sent as "Resolved: <title>")."""
    if hold.kind == "broker":
        return "Redis (the run launcher's broker) is unreachable"
    if hold.kind == "worker":
        return f"No imagen worker serves backend {hold.scope!r}'s queue"
    return f"Backend {hold.scope!r} is down"


def alert_text(hold: Hold, ended: bool = False) -> str:
    """The operator alert's text: what happened and what the held jobs do."""
    if ended:
        return "It is back; the jobs it held start now."
    return f"{hold.detail}. Its jobs wait as pending (no attempt is spent) until it is back."


def launch_holds(path: LaunchPath, queues: Mapping[str, str]) -> dict[HoldKind, list[Hold]]:
    """The broker and worker holds for ``path``, by kind; ``queues``: each backend
    instance's worker queue. With the broker away the workers cannot be seen, so their
    holds are left as they are (no ``worker`` entry)."""
    if path.broker_error is not None:
        detail = f"the run launcher's broker: {path.broker_error}"
        return {"broker": [Hold("broker", ALL, BROKER_DOWN, detail)]}
    workers: list[Hold] = []
    if path.workers is not None:
        for name, queue in sorted(queues.items()):
            if not path.serves(queue):
                workers.append(
                    Hold(
                        "worker",
                        name,
                        NO_WORKER,
                        f"no imagen worker serves queue {queue} (backend {name!r}'s runs); "
                        f"start one with: imagen worker --queue {queue}",
                    )
                )
    return {"broker": [], "worker": workers}


def current_holds(conn: psycopg.Connection, kind: HoldKind | None = None) -> list[Hold]:
    """The holds in force (of ``kind``, or all), by kind and scope."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            """
            SELECT kind, scope, public, detail FROM imagen.job_holds
             WHERE %(kind)s::text IS NULL OR kind = %(kind)s
             ORDER BY kind, scope
            """,
            {"kind": kind},
        )
        holds = [Hold(**record) for record in cursor.fetchall()]
    conn.commit()
    return holds


def replace_holds(conn: psycopg.Connection, kind: HoldKind, holds: Sequence[Hold]) -> HoldChanges:
    """Make ``holds`` the holds of ``kind``: new ones begin, missing ones end, the others
    keep their ``since`` (their detail is refreshed)."""
    scopes = [hold.scope for hold in holds]
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            """
            DELETE FROM imagen.job_holds
             WHERE kind = %(kind)s AND scope <> ALL(%(scopes)s)
            RETURNING kind, scope, public, detail
            """,
            {"kind": kind, "scopes": scopes},
        )
        ended = [Hold(**record) for record in cursor.fetchall()]
        began = []
        for hold in holds:
            cursor.execute(
                """
                INSERT INTO imagen.job_holds (kind, scope, public, detail)
                VALUES (%(kind)s, %(scope)s, %(public)s, %(detail)s)
                ON CONFLICT (kind, scope) DO UPDATE
                   SET public = excluded.public, detail = excluded.detail, checked_at = now()
                RETURNING (xmax = 0) AS inserted
                """,
                {"kind": kind, "scope": hold.scope, "public": hold.public, "detail": hold.detail},
            )
            record = cursor.fetchone()
            if record is not None and record["inserted"]:
                began.append(hold)
    return HoldChanges(began=began, ended=ended)


def hold_backend(conn: psycopg.Connection, name: str, detail: str) -> bool:
    """Hold the rows for backend ``name`` (its server is down); True if the hold is new."""
    hold = Hold("backend", name, BACKEND_DOWN, detail)
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO imagen.job_holds (kind, scope, public, detail)
            VALUES (%(kind)s, %(scope)s, %(public)s, %(detail)s)
            ON CONFLICT (kind, scope) DO NOTHING
            """,
            {"kind": hold.kind, "scope": hold.scope, "public": hold.public, "detail": detail},
        )
        return cursor.rowcount == 1


def backend_holds_due(conn: psycopg.Connection, every_s: float) -> list[Hold]:
    """Backend holds not checked for ``every_s`` seconds; each is marked checked now."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            """
            UPDATE imagen.job_holds SET checked_at = now()
             WHERE kind = 'backend' AND checked_at <= now() - make_interval(secs => %(every)s)
            RETURNING kind, scope, public, detail
            """,
            {"every": every_s},
        )
        return sorted((Hold(**record) for record in cursor.fetchall()), key=lambda h: h.scope)


def release(conn: psycopg.Connection, hold: Hold) -> bool:
    """End one hold; True if it was in force."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            "DELETE FROM imagen.job_holds WHERE kind = %s AND scope = %s",
            (hold.kind, hold.scope),
        )
        return cursor.rowcount == 1


def explain_held_rows(conn: psycopg.Connection, default_backend: str) -> int:
    """Set each pending row's ``progress_text`` to why it waits (the broker's hold first,
    then the worker's, then the backend's), and clear a hold's text from rows nothing holds
    any more; returns how many rows changed."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """
            WITH waiting AS (
                SELECT p.id,
                       (SELECT h.public FROM imagen.job_holds AS h
                         WHERE h.scope IN ('*', coalesce(nullif(p.backend, ''), %(default)s))
                         ORDER BY h.scope = '*' DESC, h.kind = 'worker' DESC
                         LIMIT 1) AS public
                  FROM imagen.jobs AS p
                 WHERE p.status = 'pending')
            UPDATE imagen.jobs AS j
               SET progress_text = w.public
              FROM waiting AS w
             WHERE j.id = w.id AND j.status = 'pending'
               AND j.progress_text IS DISTINCT FROM w.public
               AND (w.public IS NOT NULL OR j.progress_text = ANY(%(texts)s))
            """,
            {"default": default_backend, "texts": list(HOLD_TEXTS)},
        )
        return cursor.rowcount

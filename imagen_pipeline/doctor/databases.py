"""The imagen database: reachable and migrated, the holds in force, a pause, and the listener's
session (found in ``pg_stat_activity`` by the ``LISTEN`` it ran, so the listener needs no
registration of its own)."""

from __future__ import annotations

import os
import time

import psycopg

from imagen_pipeline.db.connection import DATABASE_URL_ENV
from imagen_pipeline.db.migrate import applied_versions, shipped_migrations
from imagen_pipeline.doctor.report import Check, elapsed_ms
from imagen_pipeline.doctor.stack import NETWORK_TIMEOUT_S
from imagen_pipeline.queue import pause
from imagen_pipeline.queue.holds import current_holds
from imagen_pipeline.queue.listener import CHANNEL

NOT_SET = f"{DATABASE_URL_ENV} is not set: no jobs queue, no image or usage rows"


def _connect() -> psycopg.Connection:
    url = os.environ.get(DATABASE_URL_ENV, "")
    return psycopg.connect(
        url, prepare_threshold=None, connect_timeout=int(NETWORK_TIMEOUT_S), autocommit=True
    )


def _where(conn: psycopg.Connection) -> str:
    """``host:port/dbname`` of a connection (no user, no password)."""
    info = conn.info
    return f"{info.host}:{info.port}/{info.dbname}"


def check_imagen_database() -> list[Check]:
    """Connects, and compares the migrations applied with the ones shipped."""
    if not os.environ.get(DATABASE_URL_ENV):
        return [Check("imagen-db", "skip", NOT_SET)]
    started = time.monotonic()
    try:
        with _connect() as conn:
            where = _where(conn)
            applied = applied_versions(conn)
    except psycopg.Error as error:
        return [
            Check(
                "imagen-db",
                "fail",
                f"cannot connect with ${DATABASE_URL_ENV}: {_first_line(error)}",
                f"start PostgreSQL or fix {DATABASE_URL_ENV}",
            )
        ]
    took = elapsed_ms(started)
    shipped = shipped_migrations()
    pending = [f"{m.version}_{m.name}" for m in shipped if m.version not in applied]
    unknown = sorted(applied - {m.version for m in shipped})
    if pending:
        return [
            Check(
                "imagen-db",
                "fail",
                f"{where}: {len(pending)} of {len(shipped)} migrations not applied "
                f"(first {pending[0]})",
                "imagen db migrate",
            )
        ]
    if unknown:
        return [
            Check(
                "imagen-db",
                "warn",
                f"{where}: migrations this code does not ship are applied ({', '.join(unknown)})",
                "deploy the code that wrote them on every host",
            )
        ]
    return [Check("imagen-db", "ok", f"{where}: all {len(shipped)} migrations applied ({took})")]


def check_holds() -> list[Check]:
    """One warning per hold in force (rows kept pending because a part is away), and one
    when the operator paused the queue (``imagen queue pause``)."""
    if not os.environ.get(DATABASE_URL_ENV):
        return [Check("holds", "skip", NOT_SET)]
    try:
        with _connect() as conn:
            holds = current_holds(conn)
            state = pause.current(conn)
    except psycopg.Error as error:
        return [Check("holds", "skip", f"not read: {_first_line(error)} (see imagen-db)")]
    paused = (
        [
            Check(
                "pause",
                "warn",
                f"the imagen.jobs queue is {state.describe()}",
                "imagen queue resume",
            )
        ]
        if state.paused
        else []
    )
    if not holds:
        return [Check("holds", "ok", "no imagen.jobs rows are held"), *paused]
    return [
        *(
            Check(
                f"hold[{hold.kind}:{hold.scope}]",
                "warn",
                f"pending rows wait: {hold.detail}",
                "the jobs sensor releases it once the part is back",
            )
            for hold in holds
        ),
        *paused,
    ]


def check_listener() -> list[Check]:
    """A session of the imagen database whose last statement is ``LISTEN imagen_jobs``: the
    listener's (its listening connection runs nothing else)."""
    if not os.environ.get(DATABASE_URL_ENV):
        return [Check("listener", "skip", NOT_SET)]
    try:
        with _connect() as conn:
            sessions = conn.execute(
                """
                SELECT coalesce(host(client_addr), 'local') AS client,
                       extract(epoch FROM now() - backend_start) AS age_s
                  FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND query = %s
                 ORDER BY backend_start
                """,
                (f"LISTEN {CHANNEL}",),
            ).fetchall()
    except psycopg.Error as error:
        return [Check("listener", "skip", f"not read: {_first_line(error)} (see imagen-db)")]
    if not sessions:
        return [
            Check(
                "listener",
                "warn",
                f"no session listens on channel {CHANNEL}: new jobs wait for the sensor's next "
                "tick (up to 5 s)",
                "start imagen queue listen (systemctl start imagen-listener)",
            )
        ]
    found = ", ".join(f"{client} for {age_s:.0f} s" for client, age_s in sessions)
    return [Check("listener", "ok", f"{len(sessions)} session(s) listen on {CHANNEL} ({found})")]


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]

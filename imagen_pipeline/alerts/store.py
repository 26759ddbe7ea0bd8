"""Dedupe and the rate limit of alerts, in the imagen database (``imagen.alerts``,
``imagen.alert_limit``; migration ``20261207140000_operator_alerts``), shared by every
process that alerts: the daemon's sensors and run workers on any host.

Each change of an alert key is one guarded statement whose row count says who won, so two
processes seeing the same problem send it once. The common case, nothing to send (a problem
still open, an event inside its repeat window), is one statement. Functions take an
autocommit connection and open their own transaction where they need one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg

_OPEN = """
    INSERT INTO imagen.alerts AS a (key, is_open, title)
    VALUES (%(key)s, true, %(title)s)
    ON CONFLICT (key) DO UPDATE
       SET is_open = true, title = EXCLUDED.title, alerted_at = now(), seen_at = now(),
           repeats = 0
     WHERE NOT a.is_open
    RETURNING key
"""

_CLOSE = """
    UPDATE imagen.alerts
       SET is_open = false, alerted_at = now(), seen_at = now()
     WHERE key = %(key)s AND is_open
    RETURNING key
"""

_REPEAT = """
    UPDATE imagen.alerts
       SET repeats = repeats + 1, seen_at = now()
     WHERE key = %(key)s AND alerted_at > now() - %(window)s
    RETURNING key
"""

_EVENT = """
    INSERT INTO imagen.alerts AS a (key, title)
    VALUES (%(key)s, %(title)s)
    ON CONFLICT (key) DO UPDATE
       SET title = EXCLUDED.title, alerted_at = now(), seen_at = now(), repeats = 0
     WHERE a.alerted_at <= now() - %(window)s
    RETURNING key
"""

_LIMIT = """
    SELECT tokens + extract(epoch FROM now() - refilled_at) * %(per_second)s,
           held_back, undelivered
      FROM imagen.alert_limit
       FOR UPDATE
"""


@dataclass(frozen=True)
class Claim:
    """This process is to send the alert of a key; ``repeats``: events of the key folded
    into it since the previous one was sent."""

    repeats: int = 0


@dataclass(frozen=True)
class Ticket:
    """Room in the rate limit for one alert, and what was lost since the last one sent:
    alerts held back by the limit and alerts the webhook did not take."""

    held_back: int = 0
    undelivered: int = 0


def open_problem(conn: psycopg.Connection, key: str, title: str) -> Claim | None:
    """Open ``key``: a claim when it was not open (this process alerts), else None."""
    row = conn.execute(_OPEN, {"key": key, "title": title}).fetchone()
    return Claim() if row else None


def close_problem(conn: psycopg.Connection, key: str) -> Claim | None:
    """Close ``key``: a claim when it was open (this process alerts), else None."""
    row = conn.execute(_CLOSE, {"key": key}).fetchone()
    return Claim() if row else None


def claim_event(conn: psycopg.Connection, key: str, title: str, window_s: float) -> Claim | None:
    """A claim when ``key`` was not alerted within ``window_s`` (this process alerts, with
    the repeats counted since), else None and the repeat is counted."""
    params = {"key": key, "title": title, "window": timedelta(seconds=window_s)}
    if conn.execute(_REPEAT, params).fetchone():
        return None
    with conn.transaction():
        before = conn.execute(
            "SELECT repeats FROM imagen.alerts WHERE key = %(key)s FOR UPDATE", params
        ).fetchone()
        if conn.execute(_EVENT, params).fetchone() is None:
            conn.execute(_REPEAT, params)
            return None
    return Claim(repeats=before[0] if before else 0)


def take_ticket(conn: psycopg.Connection, per_hour: int) -> Ticket | None:
    """Room for one alert within ``per_hour`` (a bucket of that many, refilled at that rate
    per hour), or None and the alert is counted as held back."""
    with conn.transaction():
        row = conn.execute(_LIMIT, {"per_second": per_hour / 3600}).fetchone()
        if row is None:
            raise psycopg.DataError("imagen.alert_limit has no row (run imagen db migrate)")
        tokens, held_back, undelivered = row
        tokens = min(float(per_hour), float(tokens))
        if tokens < 1:
            conn.execute("UPDATE imagen.alert_limit SET held_back = held_back + 1")
            return None
        conn.execute(
            "UPDATE imagen.alert_limit SET tokens = %s, refilled_at = now(), held_back = 0,"
            " undelivered = 0",
            (tokens - 1,),
        )
    return Ticket(held_back=held_back, undelivered=undelivered)


def count_undelivered(conn: psycopg.Connection) -> None:
    """Count an alert the webhook did not take, for the next alert to report."""
    conn.execute("UPDATE imagen.alert_limit SET undelivered = undelivered + 1")

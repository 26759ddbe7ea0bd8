"""Where a job stands, as a web client reads it under row level security (real Postgres):
``imagen.my_queue()`` and ``imagen.queue_status()`` for two owners with priorities, checked
against the order the claim really takes the rows."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from imagen_pipeline.queue import pause, repository
from imagen_pipeline_tests.fixtures.queue import web_session

A = "0a0a0a0a-0000-4000-8000-0000000000aa"
B = "0b0b0b0b-0000-4000-8000-0000000000bb"
SECONDS_PER_IMAGE = 4


def insert(url: str, owner: str | None, n: int = 1, **fields: Any) -> list[int]:
    values = {"owner_user_id": owner, "prompt": f"secret prompt of {owner}", **fields}
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            conn.execute(
                f"INSERT INTO imagen.jobs ({', '.join(values)}) "
                f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id",
                list(values.values()),
            ).fetchone()[0]
            for _ in range(n)
        ]


def add_history(url: str, backend: str, n: int = 3) -> None:
    """``n`` done jobs of ``backend`` that took SECONDS_PER_IMAGE per image."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO imagen.jobs (owner_user_id, prompt, backend, count, status, attempts,
                                     started_at, finished_at)
            SELECT NULL, 'old', %(backend)s, 2, 'done', 1,
                   now() - make_interval(secs => 100 + g), now() - make_interval(secs => 100 + g)
                       + make_interval(secs => 2 * %(s)s)
              FROM generate_series(1, %(n)s) AS g
            """,
            {"backend": backend, "s": SECONDS_PER_IMAGE, "n": n},
        )


def my_queue(url: str, owner: str) -> list[dict[str, Any]]:
    with web_session(url, owner) as cursor:
        return cursor.execute("SELECT * FROM imagen.my_queue()").fetchall()


def standing(url: str) -> dict[int, int]:
    """Both owners' pending jobs and the position each owner reads for them."""
    rows = [row for owner in (A, B) for row in my_queue(url, owner) if row["status"] == "pending"]
    positions = {row["id"]: row["position"] for row in rows}
    assert len(set(positions.values())) == len(positions), positions
    return positions


def test_each_owner_reads_its_own_positions_in_the_order_the_claim_takes_them(
    migrated_database_url: str,
) -> None:
    url = migrated_database_url
    a_jobs = insert(url, A, 3)
    b_jobs = insert(url, B, 2, backend="other")
    [a_urgent] = insert(url, A, priority=5, count=3)
    [b_soon] = insert(url, B, priority=3)
    [service] = insert(url, None)

    mine = my_queue(url, A)
    assert {row["id"] for row in mine} == {*a_jobs, a_urgent}, "only the caller's rows"
    assert set(mine[0]) == {"id", "status", "position", "jobs_ahead", "estimated_start"}
    assert mine[0] == {
        "id": a_urgent,
        "status": "pending",
        "position": 1,
        "jobs_ahead": 0,
        "estimated_start": None,
    }, "no done job yet: no estimate"

    add_history(url, "mock")
    add_history(url, "other")
    first = standing(url)
    expected = sorted(first, key=first.__getitem__)
    assert set(expected) == {*a_jobs, *b_jobs, a_urgent, b_soon}
    claimed: list[int] = []
    with psycopg.connect(url) as conn:
        while True:
            positions = standing(url)
            [taken] = repository.claim_pending(conn, 1, None, "mock") or [None]
            if taken is None:
                break
            next_up = [job for job, position in positions.items() if position == 1]
            assert next_up == ([] if taken.id == service else [taken.id]), (positions, taken.id)
            claimed.append(taken.id)
    assert [job for job in claimed if job != service] == expected
    # Priority first, then owners in turn: the service's only job had no job before it.
    assert claimed[:4] == [a_urgent, b_soon, service, a_jobs[0]]


def test_jobs_ahead_and_the_estimate_follow_the_line_and_the_backends_pace(
    migrated_database_url: str,
) -> None:
    url = migrated_database_url
    add_history(url, "mock")
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE imagen.queue_state SET default_backend = 'mock'")
        conn.commit()
    running = insert(url, B, 2, status="running", progress=0.5)
    a_jobs = insert(url, A, 3)
    before = time.time()
    mine = my_queue(url, A)
    assert [(row["id"], row["position"], row["jobs_ahead"]) for row in mine] == [
        (a_jobs[0], 1, 0),
        (a_jobs[1], 2, 1),
        (a_jobs[2], 3, 2),
    ]
    # Two running jobs half done (one image each): 1 image of work over 2 in parallel, then
    # one image per job ahead, at 4 s per image.
    waits = [row["estimated_start"].timestamp() - before for row in mine]
    assert waits == pytest.approx([2, 4, 6], abs=1.0), waits
    assert running

    with psycopg.connect(url) as conn:
        pause.pause(conn, "GPU maintenance", "op@test")
    with web_session(url, A) as cursor:
        [status] = cursor.execute("SELECT * FROM imagen.queue_status()").fetchall()
        positions = cursor.execute("SELECT position, estimated_start FROM imagen.my_queue()")
        assert [tuple(row.values()) for row in positions] == [(1, None), (2, None), (3, None)]
    assert (status["paused"], status["reason"], status["pending"], status["in_flight"]) == (
        True,
        "GPU maintenance",
        3,
        2,
    )
    assert status["paused_at"] is not None


def test_a_client_reads_nothing_else_of_the_queue(migrated_database_url: str) -> None:
    url = migrated_database_url
    insert(url, B, 2)
    assert my_queue(url, A) == []
    with web_session(url, A) as cursor, pytest.raises(psycopg.errors.InsufficientPrivilege):
        cursor.execute("SELECT * FROM imagen.claim_order('mock')")
    with web_session(url, A) as cursor, pytest.raises(psycopg.errors.InsufficientPrivilege):
        cursor.execute("SELECT * FROM imagen.queue_state")
    with (
        web_session(url, None, role="anon") as cursor,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        cursor.execute("SELECT * FROM imagen.queue_status()")
    with web_session(url, A) as cursor:
        [status] = cursor.execute("SELECT * FROM imagen.queue_status()").fetchall()
    assert status == {
        "paused": False,
        "reason": None,
        "paused_at": None,
        "pending": 2,
        "in_flight": 0,
    }

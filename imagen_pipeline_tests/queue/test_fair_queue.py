"""What a web UI on the queue needs, on real Postgres: priority, fair share per owner, live
progress in the row (seen under RLS), variations of one prompt; the daemon tests run a real
``dagster-daemon``: the module's running stack, from a clean state for each test, except
the test that kills a run's process, which has a stack of its own."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import dagster as dg
import psycopg
import pytest
from psycopg.rows import dict_row

from imagen_pipeline.queue import repository
from imagen_pipeline_tests.fixtures.daemon import DaemonStack, holding
from imagen_pipeline_tests.fixtures.queue import web_session

A = "0a0a0a0a-0000-4000-8000-0000000000aa"
B = "0b0b0b0b-0000-4000-8000-0000000000bb"
C = "0c0c0c0c-0000-4000-8000-0000000000cc"


def insert(url: str, owner: str | None, n: int = 1, **fields: Any) -> list[int]:
    values = {"owner_user_id": owner, "prompt": "a lighthouse", **fields}
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            conn.execute(
                f"INSERT INTO imagen.jobs ({', '.join(values)}) "
                f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id",
                list(values.values()),
            ).fetchone()[0]
            for _ in range(n)
        ]


def claim(url: str, limit: int, per_owner: int | None) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row.id for row in repository.claim_pending(conn, limit, per_owner, "mock")]


def test_the_claim_takes_priority_first_then_owners_in_turn_then_age(
    migrated_database_url: str,
) -> None:
    url = migrated_database_url
    a_jobs = insert(url, A, 5)
    b_jobs = insert(url, B, 2)
    [urgent] = insert(url, C, priority=5)
    order = claim(url, 100, None)
    assert order[0] == urgent
    # Owners alternate: each owner's first job, then each owner's second, ...
    assert order[1:] == [a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1], *a_jobs[2:]]


def test_an_owner_never_has_more_than_the_limit_in_flight(migrated_database_url: str) -> None:
    url = migrated_database_url
    a_jobs = insert(url, A, 20)
    first = claim(url, 50, 3)
    assert first == a_jobs[:3]
    [b_job] = insert(url, B)
    assert claim(url, 50, 3) == [b_job], "A is at its limit; B's job is claimed at once"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE imagen.jobs SET status = 'done' WHERE id = %s", (a_jobs[0],))
    assert claim(url, 50, 3) == [a_jobs[3]]
    with psycopg.connect(url) as conn:
        fast_path = repository.claim_job(conn, a_jobs[10], 3, "mock")
        assert fast_path is None, "the fast path obeys it too"
        assert repository.claim_job(conn, a_jobs[10], None, "mock") is not None


def test_rows_without_an_owner_share_one_limit(migrated_database_url: str) -> None:
    url = migrated_database_url
    service = insert(url, None, 5)
    [user_job] = insert(url, A)
    assert claim(url, 50, 2) == [service[0], user_job, service[1]]


# -- with a real daemon -------------------------------------------------------------------


def run_records(stack: DaemonStack, jobs: list[int]) -> dict[int, dg.RunRecord]:
    """The newest run of each of ``jobs``, by job id."""
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                job_name="generate_image", tags={"imagen/job_id": [str(job) for job in jobs]}
            )
        )
    newest: dict[int, dg.RunRecord] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp):
        job = record.dagster_run.tags.get("imagen/job_id")
        if job:
            newest[int(job)] = record
    return newest


SAME_ROUND_S = 0.5
"""Runs dequeued within this of each other left Dagster's run queue in one round."""


def dequeue_times(stack: DaemonStack, run_ids: list[str]) -> dict[str, float]:
    """When each run that has left Dagster's run queue left it (its RUN_STARTING event), by
    run id."""
    times: dict[str, float] = {}
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        for run_id in run_ids:
            records = instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.RUN_STARTING
            ).records
            if records:
                times[run_id] = records[0].event_log_entry.timestamp
    return times


def test_progress_appears_in_the_row_and_only_its_owner_sees_it(
    running_stack: DaemonStack,
) -> None:
    daemon_stack = running_stack
    daemon_stack.add_backend("sampler", {"type": "mock", "latency_s": 6})
    job = daemon_stack.insert_job("a kite", backend="sampler", steps=12, owner_user_id=A)
    seen: list[tuple[float, str]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with web_session(daemon_stack.database_url, A) as cursor:
            mine = cursor.execute(
                "SELECT status, progress, progress_text FROM imagen.jobs WHERE id = %s", (job,)
            ).fetchone()
        with web_session(daemon_stack.database_url, B) as cursor:
            theirs = cursor.execute(
                "SELECT progress FROM imagen.jobs WHERE id = %s", (job,)
            ).fetchall()
        assert theirs == [], "another user never sees the row"
        assert mine is not None
        if mine["progress"] is not None and (mine["progress"], mine["progress_text"]) not in seen:
            seen.append((mine["progress"], mine["progress_text"]))
        if mine["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert mine["status"] == "done"
    assert seen[-1] == (1.0, "done")
    during = [(value, text) for value, text in seen if 0 < value < 1]
    assert any(text.startswith("sampling ") for _, text in during), seen
    # About one update a second while 6 s of sampling run, rising, never past 1.
    sampling = [value for value, text in during if text.startswith("sampling ")]
    assert 3 <= len(sampling) <= 8, seen
    assert sampling == sorted(sampling)
    with (
        web_session(daemon_stack.database_url, A) as cursor,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        cursor.execute("UPDATE imagen.jobs SET progress = 0.5 WHERE id = %s", (job,))


def test_a_high_priority_job_starts_next(running_stack: DaemonStack) -> None:
    daemon_stack = running_stack
    daemon_stack.add_backend("gpu_steady", {"type": "mock", "pool": "gpu", "latency_s": 1.5})
    backlog = [daemon_stack.insert_job(f"kite {n}", backend="gpu_steady") for n in range(20)]
    daemon_stack.wait_for(lambda rows: rows[backlog[1]]["status"] == "done", 120)
    at_insert = daemon_stack.jobs()
    urgent = daemon_stack.insert_job("the urgent kite", backend="gpu_steady", priority=10)
    # Once the urgent job is done the backlog's order no longer matters: the rest of it is
    # canceled before the next test. A backlog run not launched yet counts as launched after.
    rows = daemon_stack.wait_for(lambda rows: rows[urgent]["status"] == "done", 240)
    waiting = [i for i in backlog if at_insert[i]["started_at"] is None]
    assert len(waiting) >= 10
    runs = run_records(daemon_stack, [*backlog, urgent])
    urgent_run = runs[urgent]
    dequeued = dequeue_times(daemon_stack, [runs[job].dagster_run.run_id for job in runs])

    def left_queue(job: int) -> float:
        run = runs.get(job)
        return dequeued.get(run.dagster_run.run_id, math.inf) if run else math.inf

    # Every run still in Dagster's queue when the urgent run was created left the queue after
    # it, or in the same round of the run queue (its rounds are 0.5 s apart; the runs of one
    # round launch in parallel threads, so their order within the round is arbitrary).
    later = [job for job in waiting if left_queue(job) > urgent_run.create_timestamp.timestamp()]
    assert later, "the backlog was still queued"
    urgent_round = left_queue(urgent) - SAME_ROUND_S
    assert all(left_queue(job) >= urgent_round for job in later), (
        [(job, left_queue(job)) for job in later],
        left_queue(urgent),
    )
    # In the row: at most the runs already launched (holding or awaiting a GPU slot, or
    # launched before the sensor picked the urgent row up) and those of its own round or the
    # next started before it: a row is marked started by its run's first step, and a run
    # launched half a second later can reach its first step sooner when its process is
    # quicker to start (seen once in a loaded run: 5 rows before it where 4 were counted).
    same_round = [job for job in later if left_queue(job) < urgent_round + 3 * SAME_ROUND_S]
    before = [
        i
        for i in waiting
        if rows[i]["started_at"] is not None and rows[i]["started_at"] < rows[urgent]["started_at"]
    ]
    assert len(before) <= len(waiting) - len(later) + len(same_round), before


GENERATION_S = 2.0


def test_another_owners_single_job_does_not_wait_for_a_backlog(
    running_stack: DaemonStack,
) -> None:
    daemon_stack = running_stack
    # The limit equals the GPU pool's 2 slots (the default): A's two jobs in flight hold
    # both, so B's job waits for one of them to finish, not behind a third A job.
    daemon_stack.configure(queue={"max_in_flight_per_owner": 2})
    gpu = {"type": "mock", "pool": "gpu", "latency_s": GENERATION_S}
    daemon_stack.add_backend("gpu_steady", gpu)
    backlog = [
        daemon_stack.insert_job(f"kite {n}", backend="gpu_steady", owner_user_id=A)
        for n in range(20)
    ]
    daemon_stack.wait_for(lambda rows: rows[backlog[0]]["status"] == "done", 120)
    single = daemon_stack.insert_job("b's kite", backend="gpu_steady", owner_user_id=B)
    # Once B's job is done the rest of the backlog is canceled before the next test; an A job
    # not started yet started after B's.
    rows = daemon_stack.wait_for(lambda rows: rows[single]["status"] == "done", 240)
    waited = (rows[single]["started_at"] - rows[single]["created_at"]).total_seconds()
    after = [
        i
        for i in backlog
        if rows[i]["started_at"] is None or rows[i]["started_at"] > rows[single]["started_at"]
    ]
    print(json.dumps({"b_waited_s": round(waited, 2), "a_jobs_started_after_b": len(after)}))
    assert len(after) >= 14, (waited, len(after))
    # Never the backlog's time: the A jobs not started when B's row came, 2 s each on the 2
    # GPU slots (about 3 s on a quiet machine, at most one generation plus the sensor's
    # pickup and a run's start; the bound is the backlog's, so a loaded machine, which slows
    # both alike, does not fail it).
    pending = [
        i
        for i in backlog
        if rows[i]["started_at"] is None or rows[i]["started_at"] > rows[single]["created_at"]
    ]
    assert waited < len(pending) * GENERATION_S / 2, (waited, len(pending))


def test_a_job_of_four_variations_survives_a_killed_run_without_a_duplicate(
    daemon_stack: DaemonStack,
) -> None:
    # One generation at a time, each held by the gate: once the second image is staged
    # the test takes the gate, so the run waits at its next generation when it is killed.
    gate = str(daemon_stack.gate)
    calls = str(daemon_stack.calls_log)
    block = {"type": "mock", "latency_s": 0.5, "serial_lock": gate, "calls_log": calls}
    daemon_stack.add_backend("one_by_one", block)
    job = daemon_stack.insert_job("a kite", backend="one_by_one", count=4)
    daemon_stack.start()
    second = daemon_stack.output_dir / ".imagen-staging" / f"job-{job}-v1.json"
    deadline = time.monotonic() + 120
    while not second.exists():
        assert time.monotonic() < deadline, "the second image never got made"
        time.sleep(0.05)
    with holding(daemon_stack.gate):
        killed, _ = daemon_stack.kill_a_worker()
    rows = daemon_stack.wait_for(lambda rows: rows[job]["status"] == "done", 180)
    assert rows[job]["run_id"] != killed
    with daemon_stack.connect() as conn:
        images = conn.execute(
            "SELECT * FROM imagen.images WHERE job_id = %s ORDER BY variation", (job,)
        ).fetchall()
        usage = conn.execute(
            "SELECT variation, status FROM mai.imagen_usage WHERE job_id = %s AND "
            "status = 'succeeded' ORDER BY variation",
            (job,),
        ).fetchall()
    assert [image["variation"] for image in images] == [0, 1, 2, 3]
    assert len({image["seed"] for image in images}) == 4
    assert len({image["sha256"] for image in images}) == 4
    assert [u["variation"] for u in usage] == [0, 1, 2, 3]
    assert rows[job]["image_id"] == images[0]["id"]
    assert (rows[job]["progress"], rows[job]["progress_text"]) == (1.0, "done")
    files = sorted(daemon_stack.output_dir.glob("*.png"))
    assert len(files) == 4
    assert {str(f) for f in files} == {image["metadata"]["local_path"] for image in images}
    calls = [
        json.loads(line)
        for line in daemon_stack.calls_log.read_text().splitlines()
        if json.loads(line)["prompt"].startswith("a kite")
    ]
    made_first = [c for c in calls if c["variation"] in (0, 1)]
    assert len(made_first) == 2, "the images the killed run made are not made again"
    with psycopg.connect(daemon_stack.database_url, row_factory=dict_row) as conn:
        assert conn.execute("SELECT count(*) AS n FROM imagen.images").fetchone()["n"] == 4

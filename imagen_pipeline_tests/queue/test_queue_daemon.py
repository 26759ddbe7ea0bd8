"""The jobs queue end to end: plain SQL INSERTs, a real dagster-daemon, real Postgres.

Tests that start, kill or restart a process have a stack of their own (``daemon_stack``);
the others share the module's running stack (``running_stack``), each from a clean state.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import psycopg
import pytest
from PIL import Image

from imagen_pipeline.queue import pause
from imagen_pipeline_tests.fakes.comfyui_server import running_fake_comfyui
from imagen_pipeline_tests.fixtures.daemon import TEST_SENSOR_LOOP_S, DaemonStack, holding


def images_by_job(stack: DaemonStack) -> dict[int, list[dict[str, Any]]]:
    with stack.connect() as conn:
        rows = conn.execute("SELECT * FROM imagen.images ORDER BY id").fetchall()
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["job_id"], []).append(row)
    return grouped


def backend_calls(stack: DaemonStack) -> list[dict[str, Any]]:
    if not stack.calls_log.exists():
        return []
    return [json.loads(line) for line in stack.calls_log.read_text().splitlines()]


def job_runs(stack: DaemonStack, job_id: int) -> list[dg.DagsterRun]:
    """Every run made for ``job_id``, oldest first."""
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={"imagen/job_id": str(job_id)}), ascending=True
        )
    return [record.dagster_run for record in records]


POOL_CHECK_BOUND_S = 6
"""A killed pool process's run is failed by its ``imagen worker`` within Celery's pool
check (5 s); docs/deployment.md gives 0.1 s, at most 5 s."""


def test_rows_reach_done_failed_with_errors_and_links(
    running_stack: DaemonStack, tmp_path: Path
) -> None:
    daemon_stack = running_stack
    good = daemon_stack.insert_job(
        "a red kite over the dunes", style="watercolor", width=256, height=192
    )
    bad_style = daemon_stack.insert_job("a blue kite", style="vaporwave")
    blank = daemon_stack.insert_job("   ")
    broken = daemon_stack.insert_job("a kite", backend="broken", width=64, height=64)
    with running_fake_comfyui() as gpu_box:
        gpu = {"type": "comfyui", "url": gpu_box.url, "state_dir": str(tmp_path / "slots")}
        daemon_stack.add_backend("gpu_box", gpu)
        allowed = daemon_stack.insert_job(
            "a kite at dusk", backend="gpu_box", width=64, height=64, backend_opts='{"guidance": 4}'
        )
        batch = daemon_stack.insert_job(
            "64 kites", backend="gpu_box", width=64, height=64, backend_opts='{"27.batch_size": 64}'
        )
        rows = daemon_stack.wait_until_settled()
        # Issue 24: a client's batch size by node path never reaches the GPU box; the
        # allowed option does, and the box renders one image for it.
        assert (rows[batch]["status"], rows[batch]["error"]) == (
            "failed",
            "backend_opts.27.batch_size: sets how many images one prompt makes, which only the "
            "request's count field may set",
        )
        assert rows[allowed]["status"] == "done", rows[allowed]["error"]
        [prompt] = [body["prompt"] for body in gpu_box.submitted()]
        assert prompt["27"]["inputs"]["batch_size"] == 1
        assert prompt["26"]["inputs"]["guidance"] == 4.0
        assert images_by_job(daemon_stack)[allowed][0]["metadata"]["backend_options"] == {
            "guidance": 4
        }

    done = rows[good]
    assert done["status"] == "done", done["error"]
    assert done["run_id"] and done["started_at"] and done["finished_at"]
    images = images_by_job(daemon_stack)
    assert len(images[good]) == 1
    image_row = images[good][0]
    assert done["image_id"] == image_row["id"]
    assert image_row["run_id"] == done["run_id"]
    assert str(image_row["owner_user_id"]) == "00000000-0000-0000-0000-0000000000a1"
    assert image_row["style"] == "watercolor"
    local_path = Path(image_row["metadata"]["local_path"])
    assert local_path.parent == daemon_stack.output_dir
    with Image.open(local_path) as image:
        assert image.size == (256, 192)
        assert image.text["imagen.job_id"] == str(good)

    assert rows[bad_style]["status"] == "failed"
    assert "style: unknown style 'vaporwave'; known styles:" in rows[bad_style]["error"]
    assert (rows[blank]["status"], rows[blank]["error"]) == ("failed", "prompt: must not be empty")
    assert rows[broken]["status"] == "failed"
    assert "mock backend rejected the request: nope" in rows[broken]["error"]

    with dg.DagsterInstance.from_config(str(daemon_stack.home)) as instance:
        runs = instance.get_run_records()
        by_job = {}
        for record in runs:
            by_job.setdefault(record.dagster_run.tags.get("imagen/job_id"), []).append(record)
    assert len(by_job[str(good)]) == 1
    assert str(bad_style) not in by_job and str(blank) not in by_job
    run = by_job[str(good)][0].dagster_run
    assert run.run_id == done["run_id"]
    assert run.tags["imagen/owner"] == "00000000-0000-0000-0000-0000000000a1"
    assert run.tags["imagen/backend"] == "mock"
    assert run.tags["imagen/style"] == "watercolor"
    assert [call["prompt"].split(",")[0] for call in backend_calls(daemon_stack)].count(
        "a red kite over the dunes"
    ) == 1


HOSTILE_SHAPES = {
    "class-marker key": ("backend_opts", """'{"__class__": "os.system"}'"""),
    "array": ("backend_opts", "'[]'"),
    "JSON null": ("backend_opts", "'null'"),
    "attempts at int max": ("attempts", "2147483647"),
}


RULES = ("jobs_backend_opts_check", "jobs_attempts_check")


@contextmanager
def rules_dropped(stack: DaemonStack) -> Iterator[None]:
    """imagen.jobs without :data:`RULES` for the block; after it, the rows are gone (so
    that the rules hold for every row) and the rules are back as they were."""
    with stack.connect() as conn:
        rules = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
            "WHERE conrelid = 'imagen.jobs'::regclass AND conname = ANY(%s)",
            (list(RULES),),
        ).fetchall()
        assert sorted(rule["conname"] for rule in rules) == sorted(RULES)
        conn.execute("ALTER TABLE imagen.jobs " + ", ".join(f"DROP CONSTRAINT {c}" for c in RULES))
    try:
        yield
    finally:
        stack.reset()
        with stack.connect() as conn:
            for rule in rules:
                conn.execute(
                    f"ALTER TABLE imagen.jobs ADD CONSTRAINT {rule['conname']} {rule['definition']}"
                )


def test_the_shapes_that_stopped_the_queue_fail_alone_through_a_real_daemon(
    running_stack: DaemonStack,
) -> None:
    """Issue 11's three row shapes: refused by the database; and with its rules dropped,
    each fails on its own with its reason, every tick succeeds and the valid rows are done."""
    daemon_stack = running_stack
    with daemon_stack.connect() as conn:
        for column, literal in HOSTILE_SHAPES.values():
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(f"INSERT INTO imagen.jobs (prompt, {column}) VALUES ('x', {literal})")
        [before] = conn.execute("SELECT coalesce(max(id), 0) AS id FROM job_ticks").fetchall()
    with rules_dropped(daemon_stack):
        first = daemon_stack.insert_job("a valid kite", width=64, height=64)
        hostile = {}
        with daemon_stack.connect() as conn:
            for name, (column, literal) in HOSTILE_SHAPES.items():
                row = conn.execute(
                    f"INSERT INTO imagen.jobs (prompt, {column}) VALUES (%s, {literal}) "
                    "RETURNING id",
                    (name,),
                ).fetchone()
                assert row is not None
                hostile[name] = row["id"]
        last = daemon_stack.insert_job("another valid kite", width=64, height=64)
        rows = daemon_stack.wait_until_settled()

    assert (rows[first]["status"], rows[last]["status"]) == ("done", "done")
    errors = {name: (rows[i]["status"], rows[i]["error"]) for name, i in hostile.items()}
    assert errors == {
        "class-marker key": (
            "failed",
            "backend_opts: key '__class__' is not allowed; keys are 1-100 letters, digits, "
            "'_', '.', ':' or '-' and do not start with '_'",
        ),
        "array": ("failed", "backend_opts: must be a JSON object (got an array)"),
        "JSON null": ("failed", "backend_opts: must be a JSON object (got null)"),
        "attempts at int max": (
            "failed",
            "attempts: all 2147483647 attempts are used; this job cannot run again",
        ),
    }
    with daemon_stack.connect() as conn:
        ticks = conn.execute(
            "SELECT status, count(*) AS n FROM job_ticks WHERE id > %s GROUP BY 1", (before["id"],)
        ).fetchall()
        latest = conn.execute(
            "SELECT id, status, timestamp, update_timestamp, tick_body::text LIKE %s AS jobs "
            "FROM job_ticks ORDER BY id DESC LIMIT 5",
            ('%"imagen_jobs_sensor"%',),
        ).fetchall()
    assert ticks and "FAILURE" not in {tick["status"] for tick in ticks}, (before, ticks, latest)


def test_daemon_killed_mid_batch_then_restarted_makes_one_image_per_job(
    daemon_stack: DaemonStack,
) -> None:
    job_ids = [daemon_stack.insert_job(f"kite number {i}", width=64, height=64) for i in range(12)]
    daemon_stack.start()
    daemon_stack.wait_for(
        lambda rows: any(r["status"] in ("running", "done") for r in rows.values())
    )
    daemon_stack.kill_daemon()
    daemon_stack.start()
    rows = daemon_stack.wait_until_settled(400)

    assert {rows[job_id]["status"] for job_id in job_ids} == {"done"}
    images = images_by_job(daemon_stack)
    assert all(len(images[job_id]) == 1 for job_id in job_ids)
    pngs = sorted(daemon_stack.output_dir.glob("*.png"))
    assert len(pngs) == len(job_ids)
    for job_id in job_ids:
        assert rows[job_id]["image_id"] == images[job_id][0]["id"]


def test_the_notify_fast_path_launches_through_the_webserver(daemon_stack: DaemonStack) -> None:
    """`imagen queue listen` submits over GraphQL; the daemon's run queue starts the run.
    When the webserver goes away, the listener keeps going: each failed submission is one
    log line naming the webserver and the cause, and the sensor runs the row."""
    daemon_stack.start()
    url = daemon_stack.start_fast_path()
    deadline = time.monotonic() + 60
    while "listening on channel imagen_jobs" not in daemon_stack.log_path.read_text():
        assert time.monotonic() < deadline, "the listener did not start"
        time.sleep(0.2)
    job_id = daemon_stack.insert_job("a paper boat", width=128, height=128)
    rows = daemon_stack.wait_until_settled()
    assert rows[job_id]["status"] == "done", rows[job_id]["error"]
    with dg.DagsterInstance.from_config(str(daemon_stack.home)) as instance:
        [record] = instance.get_run_records(
            filters=dg.RunsFilter(tags={"imagen/job_id": str(job_id)})
        )
    assert record.dagster_run.tags["imagen/source"] == "imagen.jobs/notify"
    assert record.dagster_run.run_id == rows[job_id]["run_id"]
    assert [len(images) for images in images_by_job(daemon_stack).values()] == [1]

    daemon_stack.kill_webserver()
    later = daemon_stack.insert_job("a second paper boat", width=128, height=128)
    rows = daemon_stack.wait_until_settled()
    assert rows[later]["status"] == "done", rows[later]["error"]
    [run] = job_runs(daemon_stack, later)
    assert run.tags["imagen/source"] == "imagen.jobs"
    log = daemon_stack.log_path.read_text(errors="replace")
    failed = f"row {later}: run submission failed, left for the sensor: "
    [line] = [line for line in log.splitlines() if failed in line]
    assert line.endswith(
        f"{failed}the Dagster webserver at {url} did not answer (connection refused)"
    )
    assert "mutation GraphQLClientSubmitRun" not in log


def test_canceling_a_running_job_terminates_its_run(running_stack: DaemonStack) -> None:
    """The row is canceled while its generation runs on the worker: the run is canceled,
    the interrupted generation is not made again, nothing is written."""
    with holding(running_stack.gate):
        job_id = running_stack.insert_job("a slow snail", backend="gated", width=64, height=64)
        running_stack.wait_for(lambda rows: backend_calls(running_stack) != [])
        with running_stack.connect() as conn:
            conn.execute("UPDATE imagen.jobs SET status = 'canceled' WHERE id = %s", (job_id,))
        rows = running_stack.wait_for(lambda rows: rows[job_id]["finished_at"] is not None, 120)
    assert rows[job_id]["status"] == "canceled"
    [run] = job_runs(running_stack, job_id)
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert len(backend_calls(running_stack)) == 1
    assert images_by_job(running_stack) == {}
    assert not running_stack.output_dir.exists() or not any(running_stack.output_dir.glob("*.png"))


def sensor_skips_since(stack: DaemonStack, since: float) -> list[str | None]:
    """The skip reason of each imagen_jobs_sensor tick since ``since`` (None: it requested
    runs or failed)."""
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        states = [s for s in instance.all_instigator_state() if s.name == "imagen_jobs_sensor"]
        return [
            tick.skip_reason
            for s in states
            for tick in instance.get_ticks(s.instigator_origin_id, s.selector_id, after=since)
        ]


PAUSED_TICKS = 2


def test_a_paused_queue_starts_nothing_lets_running_jobs_finish_then_resumes(
    running_stack: DaemonStack,
) -> None:
    """Through the daemon's own sensor ticks: rows inserted while paused stay pending with no
    run, the job that was running finishes, and after resume every job is done."""
    with holding(running_stack.gate):
        busy = running_stack.insert_job("a slow snail", backend="gated", width=64, height=64)
        running_stack.wait_for(lambda rows: rows[busy]["status"] == "running", 120)
        with running_stack.connect() as conn:
            paused = pause.pause(conn, "GPU maintenance", "test")
        assert "0 queued jobs finish" in paused.line() and "1 running" in paused.line()
        since = time.time()
        waiting = [running_stack.insert_job(f"kite {n}", width=64, height=64) for n in range(2)]
    rows = running_stack.wait_for(
        lambda rows: (
            rows[busy]["status"] == "done"
            and len(sensor_skips_since(running_stack, since)) >= PAUSED_TICKS
        ),
        120,
    )
    skips = sensor_skips_since(running_stack, since)
    assert all(
        skip and skip.endswith(": GPU maintenance; pending jobs wait until imagen queue resume")
        for skip in skips
    ), skips
    assert [rows[job]["status"] for job in waiting] == ["pending", "pending"]
    assert all(job_runs(running_stack, job) == [] for job in waiting)
    with running_stack.connect() as conn:
        pause.resume(conn)
    rows = running_stack.wait_until_settled()
    assert {job: rows[job]["status"] for job in [busy, *waiting]} == dict.fromkeys(
        [busy, *waiting], "done"
    )


def test_a_killed_run_worker_is_noticed_and_the_job_still_ends_with_one_image(
    daemon_stack: DaemonStack,
) -> None:
    """The ``imagen worker`` whose pool process died fails its run (docs/deployment.md:
    0.1 s, at most Celery's 5 s pool check; checked here against 6 s); the run is retried
    into one image."""
    daemon_stack.env["IMAGEN_RUN_STALLED_AFTER_S"] = "8"
    daemon_stack.start()
    with holding(daemon_stack.gate):
        job_id = daemon_stack.insert_job("a steady tortoise", backend="gated", width=64, height=64)
        daemon_stack.wait_for(lambda rows: backend_calls(daemon_stack) != [])
        run_id, killed_at = daemon_stack.kill_a_worker()
        assert daemon_stack.seconds_until_finished(run_id, killed_at) < POOL_CHECK_BOUND_S
    rows = daemon_stack.wait_until_settled(180)
    assert rows[job_id]["status"] == "done", rows[job_id]["error"]
    runs = job_runs(daemon_stack, job_id)
    assert [run.status.value for run in runs] == ["FAILURE", "SUCCESS"]
    assert runs[0].run_id == run_id
    assert runs[1].parent_run_id == run_id and rows[job_id]["run_id"] == runs[1].run_id
    images = images_by_job(daemon_stack)
    assert {job: len(made) for job, made in images.items()} == {job_id: 1}
    assert images[job_id][0]["run_id"] == rows[job_id]["run_id"]
    assert len(list(daemon_stack.output_dir.glob("*.png"))) == 1


def test_a_worker_left_by_a_restarted_daemon_is_noticed_by_run_monitoring(
    daemon_stack: DaemonStack,
) -> None:
    """A run worker that dies after the daemon was restarted is still noticed (by the
    ``imagen worker`` that ran it, or run monitoring every 5 s); docs/deployment.md gives
    10 s. The retried run ends the job done, and the row names that run, which
    succeeded."""
    daemon_stack.start()
    with holding(daemon_stack.gate):
        job_id = daemon_stack.insert_job("a patient owl", backend="gated", width=64, height=64)
        daemon_stack.wait_for(lambda rows: backend_calls(daemon_stack) != [])
        daemon_stack.kill_daemon()
        daemon_stack.start()
        run_id, killed_at = daemon_stack.kill_a_worker()
        assert daemon_stack.seconds_until_finished(run_id, killed_at) < 10
    rows = daemon_stack.wait_until_settled(180)
    assert rows[job_id]["status"] == "done", rows[job_id]["error"]
    with dg.DagsterInstance.from_config(str(daemon_stack.home)) as instance:
        final = instance.get_run_by_id(rows[job_id]["run_id"])
    assert final is not None and final.status == dg.DagsterRunStatus.SUCCESS
    assert final.parent_run_id == run_id
    assert [len(images) for images in images_by_job(daemon_stack).values()] == [1]


def test_a_batch_of_gpu_jobs_leaves_run_slots_for_cloud_jobs(
    running_stack: DaemonStack,
) -> None:
    with holding(running_stack.gate):
        gpu_jobs = [
            running_stack.insert_job(f"a slow heron {i}", backend="gpu_gated", width=64, height=64)
            for i in range(7)
        ]
        cloud_job = running_stack.insert_job("a quick swift", width=64, height=64)
        rows = running_stack.wait_for(lambda rows: rows[cloud_job]["status"] == "done", 120)

        # Seven GPU runs would fill all six run slots; three may be in flight, so the cloud
        # job ran beside them while the GPU jobs still wait.
        with dg.DagsterInstance.from_config(str(running_stack.home)) as instance:
            gpu_runs = instance.get_run_records(
                filters=dg.RunsFilter(
                    tags={"imagen/pool": "imagen_gpu", "imagen/job_id": [str(i) for i in gpu_jobs]}
                )
            )
        started = [r for r in gpu_runs if r.dagster_run.status != dg.DagsterRunStatus.QUEUED]
        assert len(started) == 3, [r.dagster_run.status for r in gpu_runs]
        assert all(rows[job_id]["status"] != "done" for job_id in gpu_jobs)


def test_a_job_made_from_its_owners_image_records_its_parent_and_another_owners_fails(
    running_stack: DaemonStack,
) -> None:
    """Issue 28 through the real daemon and worker: a row naming its owner's image is done
    with the parent recorded; a row the service role wrote naming another owner's image
    fails before any backend call, and nothing of that image reaches the backend."""
    stack = running_stack
    other_owner = "00000000-0000-0000-0000-0000000000b2"
    mine = stack.insert_job("a heron", width=64, height=64)
    theirs = stack.insert_job("their heron", width=64, height=64, owner_user_id=other_owner)
    rows = stack.wait_until_settled()
    parent, their_image = rows[mine]["image_id"], rows[theirs]["image_id"]
    assert parent and their_image, rows

    child = stack.insert_job("the same, at dusk", width=64, height=64, source_images=[parent])
    hostile = stack.insert_job("not mine", width=64, height=64, source_images=[their_image])
    rows = stack.wait_until_settled()

    assert rows[child]["status"] == "done", rows[child]["error"]
    with stack.connect() as conn:
        parents = conn.execute(
            "SELECT p.parent_id, p.sha256 = i.sha256 AS same FROM imagen.image_parents AS p "
            "JOIN imagen.images AS i ON i.id = p.parent_id WHERE p.child_id = %s",
            (rows[child]["image_id"],),
        ).fetchall()
        their_sha = conn.execute(
            "SELECT sha256 FROM imagen.images WHERE id = %s", (their_image,)
        ).fetchone()["sha256"]  # type: ignore[index]
    assert parents == [{"parent_id": parent, "same": True}]
    assert rows[hostile]["status"] == "failed"
    assert rows[hostile]["error"].startswith(
        f"source_images[0]: image {their_image} is not one of your images"
    )
    logged = stack.calls_log.read_text()
    assert "not mine" not in logged and their_sha not in logged


IDLE_TICKS = 3


def code_servers_started_by(pid: int) -> list[str]:
    """The command lines of Dagster code servers among the process ``pid``'s descendants."""
    return [
        " ".join(child.cmdline())
        for child in psutil.Process(pid).children(recursive=True)
        if any(word in child.cmdline() for word in ("grpc", "code-server", "grpc-health-check"))
    ]


def sensor_tick_times_since(stack: DaemonStack, since: float) -> list[float]:
    """When imagen_jobs_sensor's ticks since ``since`` (``time.time()``) started, in order."""
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        states = [s for s in instance.all_instigator_state() if s.name == "imagen_jobs_sensor"]
        return sorted(
            tick.timestamp
            for s in states
            for tick in instance.get_ticks(s.instigator_origin_id, s.selector_id, after=since)
        )


def test_an_idle_daemon_logs_nothing_per_tick(running_stack: DaemonStack) -> None:
    """At the daemon's default level an idle queue writes no line per sensor tick (at most
    the first idle tick after the previous test's runs). The daemon starts no code server
    of its own: with one (a ``python_module`` workspace) it replaced it every 60 s and logged
    "No heartbeat received" from 100 s on (docs/deployment.md "The daemon's log"). The
    sensor ticks at the period ``IMAGEN_SENSOR_LOOP_S`` gives ``imagen daemon`` (1 s here),
    not Dagster's 5 s: every loop, or every other one when a loop comes a moment before the
    sensor's 1 s minimum interval has passed."""
    since, offset = time.time(), running_stack.log_path.stat().st_size
    deadline = time.monotonic() + 60
    while len(sensor_tick_times_since(running_stack, since)) < IDLE_TICKS:
        assert time.monotonic() < deadline, "the sensor did not tick"
        time.sleep(0.5)
    log = running_stack.log_path.read_bytes()
    during = log[offset:].decode(errors="replace").splitlines()
    assert [line for line in during if "imagen_jobs_sensor" in line and "skip" in line][1:] == []
    whole = log.decode(errors="replace")
    assert "Checking for new runs for sensor" not in whole
    assert "No heartbeat received" not in whole
    assert running_stack.process is not None
    assert code_servers_started_by(running_stack.process.pid) == []
    assert running_stack.jobs() == {}
    ticks = sensor_tick_times_since(running_stack, since)
    gaps = sorted(later - earlier for earlier, later in itertools.pairwise(ticks))
    assert gaps[len(gaps) // 2] < 2 * TEST_SENSOR_LOOP_S + 0.5, gaps

"""ImagenCeleryRunLauncher and ``imagen worker`` on scripts/dagster.postgres.yaml: a private
real Redis, real Postgres, real worker processes and, for the queue tests, a real daemon.

Runs are created in the instance and launched with ``DagsterInstance.launch_run``, as the
daemon's run queue does, or made by the daemon from ``imagen.jobs`` rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import yaml
from celery import signals
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG, DAGSTER_CELERY_TASK_ID_TAG

from imagen_pipeline.instance import celery_launcher
from imagen_pipeline.instance.celery_launcher import (
    BROKER_ENV,
    PING_TIMEOUT_S,
    BrokerUnreachableError,
    ImagenCeleryRunLauncher,
)
from imagen_pipeline.instance.dagster_internals import LaunchRunContext
from imagen_pipeline.run_tags import GPU_QUEUE, TAG_CELERY_QUEUE
from imagen_pipeline.run_tags import TAG_WORKER as WORKER_TAG
from imagen_pipeline_tests.fixtures.celery import RedisServer, Worker, Workers, run_process
from imagen_pipeline_tests.fixtures.daemon import (
    POOL_LIMITS,
    DaemonStack,
    holding,
    seconds_until_finished,
)
from imagen_pipeline_tests.fixtures.imagen import (
    PRODUCTION_INSTANCE,
    REPO_ROOT,
    file_resources,
    subprocess_env,
)
from imagen_pipeline_tests.instance.launch_target import deployed_job, generate_image_job

DEFAULT_QUEUE = "dagster"
POOL_CHECK_BOUND_S = 6
"""A killed pool process's run is failed by the worker within Celery's pool check (5 s)."""


@pytest.fixture
def instance(
    tmp_path: Path,
    fresh_database_url: str,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dg.DagsterInstance]:
    """An instance built from scripts/dagster.postgres.yaml on a fresh database and Redis."""
    monkeypatch.setenv("DAGSTER_PG_URL", fresh_database_url)
    monkeypatch.setenv(BROKER_ENV, redis_server.url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(PRODUCTION_INSTANCE.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # Workers import launch_target by module name, as a code server would.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
        yield instance


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """The ``serial_lock`` of the ``gated`` backend: its runs stay running while the test
    holds it (:func:`holding`)."""
    return tmp_path / "gate.lock"


@pytest.fixture
def config_file(write_config: Callable[..., Path], tmp_path: Path, gate: Path) -> Path:
    """imagen.yaml with a fast mock backend and a gated one, which logs its calls."""
    return write_config(
        {
            "default_backend": "mock",
            "backends": {
                "mock": {"type": "mock"},
                "gated": {
                    "type": "mock",
                    "serial_lock": str(gate),
                    "calls_log": str(tmp_path / "gated_calls.jsonl"),
                },
            },
        }
    )


def create_run(
    instance: dg.DagsterInstance, config_file: Path, prompt: str, backend: str
) -> dg.DagsterRun:
    """A ``generate_image`` run in the instance, not launched yet."""
    recon = dg.reconstructable(generate_image_job)
    return instance.create_run_for_job(
        job_def=generate_image_job(),
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": prompt, "backend": backend}}},
            "resources": file_resources(config_file),
        },
        job_code_origin=recon.get_python_origin(),
    )


def launch(instance: dg.DagsterInstance, config_file: Path, prompt: str, backend: str) -> str:
    """Create a ``generate_image`` run and launch it through the instance; returns its id."""
    run = create_run(instance, config_file, prompt, backend)
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run.run_id


def wait_for_status(
    instance: dg.DagsterInstance,
    run_id: str,
    statuses: set[dg.DagsterRunStatus],
    timeout_s: float = 120,
) -> dg.DagsterRun:
    """Poll until the run reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.status in statuses:
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} is {run.status}, expected one of {statuses}")
        time.sleep(0.1)


def wait_for_step(instance: dg.DagsterInstance, run_id: str, step_key: str) -> None:
    """Poll until ``step_key`` has started in the run."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_START
        ).records
        if any(r.event_log_entry.step_key == step_key for r in records):
            return
        time.sleep(0.1)
    pytest.fail(f"step {step_key} of run {run_id} did not start")


def engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's engine event messages."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    return [
        (r.event_log_entry.dagster_event.message if r.event_log_entry.dagster_event else None)
        or r.event_log_entry.user_message
        for r in records.records
    ]


def logged_success(worker: Worker, run_id: str) -> bool:
    """Whether Dagster's console log line for the run's success is in the worker's output."""
    return any(run_id in line and "RUN_SUCCESS" in line for line in worker.log().splitlines())


def test_broker_and_backend_have_one_source_and_rpc_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(BROKER_ENV, raising=False)
    monkeypatch.delenv(celery_launcher.BACKEND_ENV, raising=False)
    assert celery_launcher.celery_urls() == ("redis://127.0.0.1:6379/0",) * 2
    monkeypatch.setenv(BROKER_ENV, "redis://broker:6379/1")
    assert celery_launcher.celery_urls() == ("redis://broker:6379/1",) * 2
    monkeypatch.setenv(celery_launcher.BACKEND_ENV, "rpc://")
    with pytest.raises(dg.DagsterInvariantViolationError, match="rpc://"):
        celery_launcher.celery_urls()
    assert "broker" not in ImagenCeleryRunLauncher.config_type()
    assert "backend" not in ImagenCeleryRunLauncher.config_type()
    # The pipeline's tag is dagster-celery's own.
    assert TAG_CELERY_QUEUE == DAGSTER_CELERY_QUEUE_TAG


def test_the_worker_needs_dagster_home_with_the_celery_launcher(tmp_path: Path) -> None:
    def worker(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["imagen", "worker"],
            env=subprocess_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )

    unset = worker()
    assert unset.returncode == 2
    assert "imagen: error: DAGSTER_HOME is not set" in unset.stderr
    home = tmp_path / "sqlite_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    other = worker(DAGSTER_HOME=str(home))
    assert other.returncode == 1
    assert "launches runs with DefaultRunLauncher, not ImagenCeleryRunLauncher" in other.stderr


def test_the_worker_sets_the_pools_that_are_not_set_and_leaves_a_chosen_one(
    instance: dg.DagsterInstance,
    write_config: Callable[..., Path],
    celery_workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue: with `dagster instance concurrency set` skipped, imagen_cloud silently ran
    on default_limit 2 instead of 8."""
    storage = instance.event_log_storage
    storage.delete_concurrency_limit("imagen_cloud")
    storage.set_concurrency_slots("imagen_gpu", 1)
    two_boxes = [{"url": "http://box1:8188"}, {"url": "http://box2:8188"}]
    config = write_config(
        {"backends": {"mock": {"type": "mock"}, "gpu": {"type": "comfyui", "servers": two_boxes}}}
    )
    monkeypatch.setenv("IMAGEN_CONFIG", str(config))
    worker = celery_workers.start("cloud@hostb", subprocess_env())
    infos = storage.get_concurrency_infos(["imagen_gpu", "imagen_cloud"])
    assert {pool: (i.limit, i.using_default_limit) for pool, i in infos.items()} == {
        "imagen_gpu": (1, False),
        "imagen_cloud": (8, False),
    }
    assert (
        "pool imagen_cloud had no limit of its own (in force: 2 (not set: dagster.yaml's "
        "concurrency.pools.default_limit)); set it to 8 from imagen.yaml" in worker.log()
    )
    assert (
        "pool imagen_gpu is 1 (set on the instance); imagen.yaml needs 4 "
        "(imagen config limits --apply sets it)" in worker.log()
    )


def test_runs_execute_on_a_worker_that_names_itself_in_the_run(
    instance: dg.DagsterInstance,
    config_file: Path,
    celery_workers: Workers,
    tmp_path: Path,
) -> None:
    assert isinstance(instance.run_launcher, ImagenCeleryRunLauncher)
    worker = celery_workers.start("cloud@hostb", subprocess_env())
    run_ids = [launch(instance, config_file, f"lighthouse {i}", "mock") for i in range(3)]
    runs = [wait_for_status(instance, run_id, {dg.DagsterRunStatus.SUCCESS}) for run_id in run_ids]

    for run in runs:
        assert run.tags[WORKER_TAG] == "cloud@hostb"
        pid = run_process(instance, run.run_id)
        assert pid in worker.pool_pids()
        assert any(
            m.startswith("Celery worker cloud@hostb (host ") and f"pid {pid})" in m
            for m in engine_messages(instance, run.run_id)
        )
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    # Dagster's console log reaches the worker's output as Dagster wrote it.
    assert "WARNING/ForkPoolWorker" not in worker.log()
    assert all(logged_success(worker, run_id) for run_id in run_ids)


def test_a_warm_pool_process_follows_an_edit_of_imagen_yaml_at_its_next_run(
    instance: dg.DagsterInstance, write_config: Callable[..., Path], celery_workers: Workers
) -> None:
    """One pool process, two runs, imagen.yaml edited between them: the second run loads the
    code location again and uses the file as it is (Dagster alone would keep the first)."""
    config_file = write_config({"backends": {"mock": {"type": "mock", "model": "before"}}})
    celery_workers.start(
        "cloud@hostb", subprocess_env(IMAGEN_CONFIG=str(config_file)), concurrency=1
    )
    recon = dg.reconstructable(deployed_job)

    def run_with_model() -> str:
        run = instance.create_run_for_job(
            job_def=deployed_job(),
            run_config={"ops": {"enrich_prompt": {"config": {"prompt": "a kite"}}}},
            job_code_origin=recon.get_python_origin(),
        )
        instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
        wait_for_status(instance, run.run_id, {dg.DagsterRunStatus.SUCCESS})
        materialization = next(
            event.asset_materialization
            for event in instance.all_logs(run.run_id)
            if event.asset_materialization is not None
        )
        return str(materialization.metadata["model"].value)

    first = run_with_model()
    edited = yaml.safe_load(config_file.read_text())
    edited["backends"]["mock"]["model"] = "after"
    config_file.write_text(yaml.safe_dump(edited))
    assert (first, run_with_model()) == ("before", "after")


def test_the_run_names_its_task_before_the_task_is_sent(
    instance: dg.DagsterInstance, config_file: Path
) -> None:
    """A worker takes a sent task at once and writes the run; a tag written after the send
    could lose that write or be lost to it (Dagster rewrites the whole stored run)."""
    run = create_run(instance, config_file, "a tagged lighthouse", "mock")
    seen: dict[str, str | None] = {}

    def stored_tag(headers: dict[str, Any], **_: Any) -> None:
        stored = instance.get_run_by_id(run.run_id)
        assert stored is not None
        seen[headers["id"]] = stored.tags.get(DAGSTER_CELERY_TASK_ID_TAG)

    signals.before_task_publish.connect(stored_tag, weak=False)
    try:
        instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    finally:
        signals.before_task_publish.disconnect(stored_tag)
    [(task_id, tag_at_send)] = seen.items()
    assert tag_at_send == task_id
    launched = instance.get_run_by_id(run.run_id)
    assert launched is not None and launched.tags[DAGSTER_CELERY_TASK_ID_TAG] == task_id


def test_the_health_check_trusts_the_backend_and_storage_over_a_stale_copy_of_the_run(
    instance: dg.DagsterInstance, config_file: Path, celery_workers: Workers, gate: Path
) -> None:
    """Run monitoring checks a copy of the run read before it checks; the copy may miss
    tags written since (this failed running runs in a burst of 40)."""
    celery_workers.start("cloud@hostb", subprocess_env())
    with holding(gate):
        run_id = launch(instance, config_file, "a lighthouse checked late", "gated")
        wait_for_step(instance, run_id, "generate_cloud")
        run = wait_for_status(instance, run_id, {dg.DagsterRunStatus.STARTED})
        launcher = instance.run_launcher
        untagged = {
            key: value
            for key, value in run.tags.items()
            if key not in {DAGSTER_CELERY_TASK_ID_TAG, WORKER_TAG}
        }
        no_worker = {key: value for key, value in run.tags.items() if key != WORKER_TAG}
        for tags in (untagged, no_worker):
            health = launcher.check_run_worker_health(run.with_tags(tags))
            assert (health.status.name, health.msg) == ("RUNNING", None)
        assert instance.run_launcher.terminate(run_id)
        wait_for_status(instance, run_id, {dg.DagsterRunStatus.CANCELED}, timeout_s=30)


def test_terminate_from_another_process_cancels_the_run(
    instance: dg.DagsterInstance,
    config_file: Path,
    celery_workers: Workers,
    tmp_path: Path,
    gate: Path,
) -> None:
    celery_workers.start("cloud@hostb", subprocess_env())
    with holding(gate):
        run_id = launch(instance, config_file, "a slow lighthouse", "gated")
        wait_for_step(instance, run_id, "generate_cloud")
        run = wait_for_status(instance, run_id, {dg.DagsterRunStatus.STARTED})
        assert instance.run_launcher.check_run_worker_health(run).status.name == "RUNNING"

        # As the webserver or the jobs sensor would: another process, the same instance.
        terminate = (
            "import dagster as dg, sys\n"
            "with dg.DagsterInstance.get() as instance:\n"
            "    print(instance.run_launcher.terminate(sys.argv[1]))"
        )
        result = subprocess.run(
            [sys.executable, "-c", terminate, run_id],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (result.returncode, result.stdout.strip()) == (0, "True"), result.stderr

        wait_for_status(instance, run_id, {dg.DagsterRunStatus.CANCELED}, timeout_s=30)
    assert not list((tmp_path / "out").glob("*.png"))
    # One interrupt ends the run: the interrupted generation is not retried.
    assert len((tmp_path / "gated_calls.jsonl").read_text().splitlines()) == 1


def test_a_cancel_that_comes_as_the_run_ends_leaves_the_runs_end_standing(
    instance: dg.DagsterInstance, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel reads the run while it is still started, and the run fails just after that
    read: the CANCELING the cancel then records came after the run's end and left it
    CANCELING for good (until run monitoring's cancel timeout, 180 s, holding a run slot).
    Seen when a queued job was canceled as its last step failed on the row's cancel."""
    run_id = launch(instance, config_file, "nobody serves this queue yet", "mock")
    started = instance.get_run_by_id(run_id)
    assert started is not None
    instance.handle_run_event(
        run_id,
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value, job_name=started.job_name
        ),
    )
    read = instance.get_run_by_id

    def read_then_the_run_fails(wanted: str) -> dg.DagsterRun | None:
        monkeypatch.setattr(instance, "get_run_by_id", read)
        before = read(wanted)
        assert before is not None and before.status == dg.DagsterRunStatus.STARTED
        instance.report_run_failed(before, message="the run's last step failed")
        return before

    monkeypatch.setattr(instance, "get_run_by_id", read_then_the_run_fails)
    assert not instance.run_launcher.terminate(run_id), "nothing was left to terminate"
    ended = instance.get_run_by_id(run_id)
    assert ended is not None and ended.status == dg.DagsterRunStatus.FAILURE
    assert any(
        "had ended before its cancel was recorded" in message
        for message in engine_messages(instance, run_id)
    )


def test_terminate_before_a_worker_took_the_run_cancels_it(
    instance: dg.DagsterInstance, config_file: Path
) -> None:
    run_id = launch(instance, config_file, "nobody serves this queue yet", "mock")
    assert instance.run_launcher.terminate(run_id)
    wait_for_status(instance, run_id, {dg.DagsterRunStatus.CANCELED}, timeout_s=5)


def test_with_redis_away_a_launch_is_refused_at_once_and_nothing_is_sent(
    instance: dg.DagsterInstance, config_file: Path, redis_server: RedisServer
) -> None:
    """Celery's own send retried through the outage for 15-20 s per run, holding a launch
    thread of the run queue; the launcher refuses within its ping's timeout."""
    redis_server.stop()
    run = create_run(instance, config_file, "while redis is away", "mock")
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError, match="not sent: the Celery broker"):
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    assert time.monotonic() - started < PING_TIMEOUT_S + 1
    stored = instance.get_run_by_id(run.run_id)
    assert stored is not None and DAGSTER_CELERY_TASK_ID_TAG not in stored.tags


def test_a_killed_pool_process_fails_its_run_at_once(
    instance: dg.DagsterInstance, config_file: Path, celery_workers: Workers, gate: Path
) -> None:
    """Also for a pool process that survived a revoke before: Celery then reports its
    task revoked, not lost (one pool process, so the second run lands on it)."""
    celery_workers.start("cloud@hostb", subprocess_env(), concurrency=1)
    with holding(gate):
        canceled = launch(instance, config_file, "a lighthouse canceled first", "gated")
        wait_for_step(instance, canceled, "generate_cloud")
        instance.run_launcher.terminate(canceled)
        wait_for_status(instance, canceled, {dg.DagsterRunStatus.CANCELED}, timeout_s=30)

        for prompt in ("a doomed lighthouse", "another doomed lighthouse"):
            run_id = launch(instance, config_file, prompt, "gated")
            wait_for_step(instance, run_id, "generate_cloud")
            process = psutil.Process(run_process(instance, run_id))
            killed_at = time.time()
            process.kill()

            # The worker's main process reports it when Celery's pool sees the exit: at
            # once, or at its periodic pool check (every 5 s) for a process it does not
            # watch yet.
            assert seconds_until_finished(instance, run_id, killed_at) < POOL_CHECK_BOUND_S
            failed = instance.get_run_by_id(run_id)
            assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
            assert any(
                "Celery worker cloud@hostb lost the run's pool process" in m
                for m in engine_messages(instance, run_id)
            )
            assert instance.run_launcher.check_run_worker_health(failed).status.name == "FAILED"


def test_a_dead_worker_fails_the_health_check_once_silent_for_the_grace(
    instance: dg.DagsterInstance,
    config_file: Path,
    celery_workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
    gate: Path,
) -> None:
    grace_s = 1.0
    monkeypatch.setattr(instance.run_launcher, "silent_grace_s", grace_s)
    worker = celery_workers.start("cloud@hostb", subprocess_env())
    with holding(gate):
        run_id = launch(instance, config_file, "a lighthouse on a dying host", "gated")
        wait_for_step(instance, run_id, "generate_cloud")
        pool = worker.pool_pids()
        celery_workers.kill(worker)
    # The pool dies with the main process: nothing keeps executing the run.
    psutil.wait_procs([psutil.Process(pid) for pid in pool if psutil.pid_exists(pid)], 10)
    assert not any(psutil.pid_exists(pid) for pid in pool)

    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.STARTED
    launcher = instance.run_launcher
    first = launcher.check_run_worker_health(run)
    silent_since = time.monotonic()
    assert (first.status.name, first.msg) == ("RUNNING", "worker cloud@hostb silent for 0s")
    # Each check waits for the dead worker's ping to time out (2 s): no sleep needed.
    while (last := launcher.check_run_worker_health(run)).status.name == "RUNNING":
        assert time.monotonic() - silent_since < grace_s + 10, last.msg
    assert time.monotonic() - silent_since >= grace_s
    assert last.status.name == "FAILED"
    assert "Celery worker cloud@hostb has not answered" in (last.msg or "")


def test_a_worker_that_cannot_load_the_code_location_fails_the_run_with_the_traceback(
    instance: dg.DagsterInstance,
    celery_workers: Workers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = tmp_path / "fragile_location.py"
    module.write_text(
        textwrap.dedent(
            """
            import dagster as dg

            @dg.op
            def hello() -> None:
                pass

            @dg.job
            def fragile() -> None:
                hello()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import fragile_location  # type: ignore[import-not-found]

    recon = dg.reconstructable(fragile_location.fragile)
    run = instance.create_run_for_job(
        job_def=fragile_location.fragile, job_code_origin=recon.get_python_origin()
    )
    module.write_text("raise RuntimeError('this code location is broken')\n")
    celery_workers.start("cloud@hostb", subprocess_env())

    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    wait_for_status(instance, run.run_id, {dg.DagsterRunStatus.FAILURE}, timeout_s=30)
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    [error] = [
        r.event_log_entry.dagster_event.event_specific_data.error  # type: ignore[union-attr]
        for r in records.records
        if r.event_log_entry.message.endswith("Could not load job definition.")
    ]
    assert "RuntimeError: this code location is broken" in error.to_string()
    assert any("fragile_location.py" in frame for frame in error.stack)
    assert "Celery worker cloud@hostb (host " in " ".join(engine_messages(instance, run.run_id))


# End to end: imagen.jobs rows, a real daemon, Celery workers.


@pytest.fixture
def celery_stack(daemon_stack: DaemonStack) -> DaemonStack:
    """The daemon stack with its Redis running and no worker: each test starts its own."""
    daemon_stack.own_worker = False
    daemon_stack.start_broker()
    return daemon_stack


def set_instance(stack: DaemonStack, section: str, **settings: Any) -> None:
    """Change settings of one section of the stack's dagster.yaml (before it starts); a
    mapping is merged into the section's mapping of that name."""
    path = stack.home / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in settings.items():
        if isinstance(value, dict):
            config[section].setdefault(key, {}).update(value)
        else:
            config[section][key] = value
    path.write_text(yaml.safe_dump(config))


def job_runs(stack: DaemonStack, job_id: int) -> list[dg.DagsterRun]:
    """Every run made for ``job_id``, oldest first."""
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={"imagen/job_id": str(job_id)}), ascending=True
        )
    return [record.dagster_run for record in records]


def images_per_job(stack: DaemonStack) -> dict[int, int]:
    with stack.connect() as conn:
        rows = conn.execute("SELECT job_id, count(*) AS n FROM imagen.images GROUP BY 1")
        return {row["job_id"]: row["n"] for row in rows}


def backend_calls(stack: DaemonStack) -> list[dict[str, Any]]:
    if not stack.calls_log.exists():
        return []
    return [json.loads(line) for line in stack.calls_log.read_text().splitlines()]


def running_run(stack: DaemonStack, job_id: int) -> tuple[str, int]:
    """Wait until the job's row is running; returns its run and the run's process."""
    rows = stack.wait_for(lambda rows: rows[job_id]["status"] == "running", 120)
    run_id = rows[job_id]["run_id"]
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        return run_id, run_process(instance, run_id)


def test_gpu_runs_execute_only_on_the_gpu_host_and_cloud_runs_on_the_other(
    celery_stack: DaemonStack, celery_workers: Workers
) -> None:
    config = yaml.safe_load(celery_stack.config_file.read_text())
    celery_stack.configure(backends={**config["backends"], "gpu": {"type": "mock", "pool": "gpu"}})
    gpu = celery_workers.start("gpu@gpuhost", celery_stack.env, queues=(GPU_QUEUE,), wait=False)
    cloud = celery_workers.start("cloud@cloudhost", celery_stack.env, wait=False)
    celery_stack.start()
    for worker in (gpu, cloud):
        celery_workers.wait_until_ready(worker)
    gpu_jobs = [celery_stack.insert_job(f"gpu {i}", backend="gpu", width=64) for i in range(3)]
    cloud_jobs = [celery_stack.insert_job(f"cloud {i}", width=64) for i in range(3)]
    rows = celery_stack.wait_until_settled(180)

    assert {row["status"] for row in rows.values()} == {"done"}
    with dg.DagsterInstance.from_config(str(celery_stack.home)) as instance:
        for job_ids, worker, queue in (
            (gpu_jobs, gpu, GPU_QUEUE),
            (cloud_jobs, cloud, DEFAULT_QUEUE),
        ):
            for job_id in job_ids:
                [run] = job_runs(celery_stack, job_id)
                assert run.tags[WORKER_TAG] == worker.name
                assert run.tags.get(TAG_CELERY_QUEUE, DEFAULT_QUEUE) == queue
                messages = engine_messages(instance, run.run_id)
                assert any(m.startswith(f"Celery worker {worker.name} (host ") for m in messages)
                assert logged_success(worker, run.run_id)


def test_a_dead_worker_host_is_noticed_by_run_monitoring_and_the_job_ends_with_one_image(
    celery_stack: DaemonStack, celery_workers: Workers
) -> None:
    """The whole worker dies (main and pool: a lost host): nothing reports the run, run
    monitoring fails it once the worker has been silent for the launcher's
    ``silent_grace_seconds`` (6 s here, from dagster.yaml; 15 by default, the grace for
    broker restarts); the retried run finishes on another worker."""
    grace_s = 6.0
    set_instance(celery_stack, "run_launcher", config={"silent_grace_seconds": grace_s})
    doomed = celery_workers.start("doomed@hosta", celery_stack.env)
    celery_stack.start()
    with holding(celery_stack.gate):
        job_id = celery_stack.insert_job("a patient owl", backend="gated", width=64, height=64)
        celery_stack.wait_for(lambda rows: backend_calls(celery_stack) != [])
        run_id, _ = running_run(celery_stack, job_id)
        killed_at = time.time()
        celery_workers.kill(doomed)

        bound = grace_s + 2 * 5 + celery_launcher.PING_TIMEOUT_S
        assert grace_s <= celery_stack.seconds_until_finished(run_id, killed_at) < bound
    celery_workers.start("spare@hostb", celery_stack.env)
    rows = celery_stack.wait_until_settled(180)
    assert rows[job_id]["status"] == "done", rows[job_id]["error"]
    runs = job_runs(celery_stack, job_id)
    assert [run.status.value for run in runs] == ["FAILURE", "SUCCESS"]
    assert runs[1].tags[WORKER_TAG] == "spare@hostb"
    assert images_per_job(celery_stack) == {job_id: 1}
    assert len(list(celery_stack.output_dir.glob("*.png"))) == 1


def test_a_redis_restart_mid_burst_loses_no_job_and_makes_none_twice(
    celery_stack: DaemonStack, celery_workers: Workers
) -> None:
    """The restarted Redis (no persistence) has lost the queued tasks and every result:
    their runs fail at run monitoring's start timeout (14 s here) and are retried; the
    running ones finish, and are not failed by health checks while their worker
    reconnects."""
    set_instance(celery_stack, "run_monitoring", start_timeout_seconds=14)
    celery_workers.start("cloud@cloudhost", celery_stack.env, concurrency=3)
    celery_stack.start()
    job_ids = [
        celery_stack.insert_job(f"burst {i}", backend="steady", width=64, height=64)
        for i in range(8)
    ]
    celery_stack.wait_for(
        lambda rows: sum(row["status"] == "running" for row in rows.values()) >= 2, 120
    )
    celery_stack.redis.restart()
    rows = celery_stack.wait_until_settled(300)

    assert {row["status"] for row in rows.values()} == {"done"}, rows
    assert images_per_job(celery_stack) == dict.fromkeys(job_ids, 1)
    assert len(list(celery_stack.output_dir.glob("*.png"))) == len(job_ids)

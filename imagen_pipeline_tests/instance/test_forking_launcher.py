"""ForkingRunLauncher on the production instance config (real Postgres, real processes).

Runs are created in the instance and launched with ``DagsterInstance.launch_run``, as the
daemon's run queue does; the workers are real forks of a real forkserver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import psutil
import pytest

from imagen_pipeline.instance.forking_launcher import (
    FORKSERVERS,
    PID_TAG,
    ForkingRunLauncher,
    ForkserverError,
)
from imagen_pipeline_tests.fixtures.daemon import POOL_LIMITS
from imagen_pipeline_tests.fixtures.imagen import PRODUCTION_INSTANCE, REPO_ROOT, subprocess_env
from imagen_pipeline_tests.instance.launch_target import generate_image_job


@pytest.fixture
def instance(
    tmp_path: Path, fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """An instance built from scripts/dagster.postgres.yaml on a fresh database."""
    monkeypatch.setenv("DAGSTER_PG_URL", fresh_database_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(PRODUCTION_INSTANCE.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # The forkserver imports launch_target by module name, as a code server would.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # As docs/deployment.md says for a new instance: both generate pools get explicit
        # limits (two runs first claiming a pool with only default_limit race on Postgres).
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
        yield instance
    # Let the forkservers finish (and report their workers' exits) before the database goes.
    for forkserver in FORKSERVERS.forkservers.values():
        forkserver.close()
        forkserver.process.wait(timeout=60)
    FORKSERVERS.forkservers.clear()


@pytest.fixture
def config_file(write_config: Callable[..., Path], tmp_path: Path) -> Path:
    """imagen.yaml with a fast and a slow (60 s) mock backend; the slow one logs its calls."""
    return write_config(
        {
            "default_backend": "mock",
            "backends": {
                "mock": {"type": "mock"},
                "slow": {
                    "type": "mock",
                    "latency_s": 60,
                    "calls_log": str(tmp_path / "slow_calls.jsonl"),
                },
            },
        }
    )


def launch(instance: dg.DagsterInstance, config_file: Path, prompt: str, backend: str) -> str:
    """Create a ``generate_image`` run and launch it through the instance; returns its id."""
    recon = dg.reconstructable(generate_image_job)
    run = instance.create_run_for_job(
        job_def=generate_image_job(),
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": prompt, "backend": backend}}},
            "resources": {"imagen": {"config": {"config_path": str(config_file)}}},
        },
        job_code_origin=recon.get_python_origin(),
    )
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
        time.sleep(0.2)


def wait_for_step(instance: dg.DagsterInstance, run_id: str, step_key: str) -> None:
    """Poll until ``step_key`` has started in the run."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_START
        ).records
        if any(r.event_log_entry.step_key == step_key for r in records):
            return
        time.sleep(0.2)
    pytest.fail(f"step {step_key} of run {run_id} did not start")


def engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's engine event messages."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    return [
        (r.event_log_entry.dagster_event.message if r.event_log_entry.dagster_event else None)
        or r.event_log_entry.user_message
        for r in records.records
    ]


def forkserver_pids() -> set[int]:
    """Pids of this process's forkservers."""
    return {forkserver.process.pid for forkserver in FORKSERVERS.forkservers.values()}


def worker(run: dg.DagsterRun) -> psutil.Process:
    """The run's worker process, from the pid the launcher tagged it with."""
    return psutil.Process(int(run.tags[PID_TAG]))


def test_runs_execute_in_forks_of_one_warm_forkserver(
    instance: dg.DagsterInstance, config_file: Path, tmp_path: Path
) -> None:
    assert isinstance(instance.run_launcher, ForkingRunLauncher)
    earlier_forkservers = forkserver_pids()
    run_ids = [launch(instance, config_file, f"lighthouse {i}", "mock") for i in range(3)]
    runs = [wait_for_status(instance, run_id, {dg.DagsterRunStatus.SUCCESS}) for run_id in run_ids]

    pids = {int(run.tags[PID_TAG]) for run in runs}
    assert len(pids) == 3
    [forkserver] = forkserver_pids() - earlier_forkservers
    assert psutil.Process(forkserver).is_running()
    for run in runs:
        pid = run.tags[PID_TAG]
        messages = engine_messages(instance, run.run_id)
        forked = (
            f"[ForkingRunLauncher] Forked run worker (pid: {pid}) "
            f"from forkserver (pid: {forkserver})."
        )
        assert forked in messages
        # The run reports the process it executed in: the fork the launcher recorded.
        assert f"Started process for run (pid: {pid})." in messages
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


def test_terminate_from_another_process_cancels_the_running_worker(
    instance: dg.DagsterInstance, config_file: Path, tmp_path: Path
) -> None:
    run_id = launch(instance, config_file, "a slow lighthouse", "slow")
    wait_for_step(instance, run_id, "generate_cloud")
    run = wait_for_status(instance, run_id, {dg.DagsterRunStatus.STARTED})
    process = worker(run)
    assert process.ppid() in forkserver_pids()
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
    process.wait(timeout=30)
    assert not list((tmp_path / "out").glob("*.png"))
    # One interrupt ends the run: the interrupted generation is not retried.
    assert len((tmp_path / "slow_calls.jsonl").read_text().splitlines()) == 1


def test_a_killed_worker_fails_its_run_at_once(
    instance: dg.DagsterInstance, config_file: Path
) -> None:
    run_id = launch(instance, config_file, "a doomed lighthouse", "slow")
    wait_for_step(instance, run_id, "generate_cloud")
    run = wait_for_status(instance, run_id, {dg.DagsterRunStatus.STARTED})
    os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)

    # Well before run monitoring's 30 s poll: the forkserver reports the exit.
    failed = wait_for_status(instance, run_id, {dg.DagsterRunStatus.FAILURE}, timeout_s=15)
    assert any("was terminated by signal 9" in m for m in engine_messages(instance, run_id))
    health = instance.run_launcher.check_run_worker_health(failed)
    assert health.status.name == "FAILED"
    assert run.tags[PID_TAG] in health.msg


def test_a_code_location_that_does_not_load_fails_the_launch_with_its_error(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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

    with pytest.raises(ForkserverError, match="this code location is broken"):
        instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None
    assert failed.status == dg.DagsterRunStatus.FAILURE
    assert any("this code location is broken" in m for m in engine_messages(instance, run.run_id))

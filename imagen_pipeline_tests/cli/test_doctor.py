"""``imagen doctor``: the real command against a real stack (Postgres, Redis, ``imagen worker``,
``dagster-daemon``, ``dagster-webserver``, ``imagen queue listen``), healthy and with each part
missing in turn; the failing line names the part."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from imagen_pipeline.doctor.dagster_parts import HEARTBEAT_STALE_S, heartbeat_check
from imagen_pipeline.doctor.report import (
    Check,
    Probe,
    exit_status,
    redact_url,
    render_lines,
    run_probes,
)
from imagen_pipeline.instance.celery_launcher import BROKER_ENV
from imagen_pipeline.queue.listener import CHANNEL
from imagen_pipeline_tests.fakes.comfyui_server import FakeComfyUI, running_fake_comfyui
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.storage_server import FakeStorage, running_fake_storage
from imagen_pipeline_tests.fixtures.daemon import (
    POOL_LIMITS,
    WORKER_CONCURRENCY,
    WORKER_QUEUES,
    DaemonStack,
)
from imagen_pipeline_tests.fixtures.imagen import PRODUCTION_INSTANCE, subprocess_env

STORAGE_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.doctor-test-signature"


def doctor(
    env: dict[str, str], *args: str, plain: bool = False
) -> tuple[int, dict[str, Check], str]:
    """Run ``imagen doctor --json``; its exit status, its checks by name and its plain text.

    The plain text is the command's own second run without ``--json`` when ``plain`` (the
    tests that look for a secret in it), else the same lines rendered from the checks
    (``render_lines``, what the command prints), which saves a process start per call."""
    ran = subprocess.run(
        ["imagen", "doctor", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in ran.stderr, ran.stderr
    found = [Check(**entry) for entry in json.loads(ran.stdout)]
    checks = {check.check: check for check in found}
    assert ran.returncode == exit_status(found)
    if not plain:
        return ran.returncode, checks, "\n".join(render_lines(found))
    printed = subprocess.run(
        ["imagen", "doctor", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert printed.returncode == ran.returncode
    return ran.returncode, checks, printed.stdout


def failing(checks: dict[str, Check]) -> set[str]:
    """The names of the failed checks."""
    return {name for name, check in checks.items() if check.status == "fail"}


# -- the report, without a stack ----------------------------------------------------------


def test_a_part_that_hangs_fails_its_own_line_and_the_others_still_answer() -> None:
    release = threading.Event()

    def hang() -> list[Check]:
        release.wait()
        return [Check("slow", "ok", "late")]

    def broken() -> list[Check]:
        raise ConnectionError("refused")

    try:
        checks = run_probes(
            [
                Probe(
                    "quick", lambda: [Check("quick", "ok", "fine"), Check("quick2", "warn", "x")]
                ),
                Probe("slow", hang),
                Probe("broken", broken),
            ],
            timeout_s=1,
        )
    finally:
        release.set()
    assert checks == [
        Check("quick", "ok", "fine"),
        Check("quick2", "warn", "x"),
        Check(
            "slow",
            "fail",
            "no answer within 1 s",
            "the part hangs (a host that drops packets, a locked table): see its own logs",
        ),
        Check("broken", "fail", "the check failed: ConnectionError: refused"),
    ]
    assert render_lines(checks[2:]) == [
        "FAIL  slow    no answer within 1 s -> the part hangs (a host that drops packets, a "
        "locked table): see its own logs",
        "FAIL  broken  the check failed: ConnectionError: refused",
    ]


def test_a_daemon_is_healthy_while_every_daemon_it_needs_beats() -> None:
    now = 10_000.0
    required = ["SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"]
    fresh = {kind: (now - 20, None) for kind in required}
    assert heartbeat_check(required, fresh, now).status == "ok"
    assert heartbeat_check([], fresh, now).status == "skip"
    never = heartbeat_check(required, {}, now)
    assert (never.status, never.detail) == (
        "fail",
        "no heartbeat from any daemon: dagster-daemon never ran",
    )
    stale = heartbeat_check(required, {**fresh, "SENSOR": (now - HEARTBEAT_STALE_S - 1, None)}, now)
    assert stale.status == "fail"
    assert stale.detail.startswith("no fresh heartbeat from SENSOR (newest 20 s ago")
    missing = heartbeat_check(required, {"SENSOR": (now - 5, None)}, now)
    assert missing.detail.startswith("no fresh heartbeat from MONITORING, QUEUED_RUN_COORDINATOR")
    erring = heartbeat_check(required, {**fresh, "SENSOR": (now - 5, "boom")}, now)
    assert (erring.status, erring.detail) == ("warn", "3 daemons beat, with errors: SENSOR: boom")


def test_urls_are_shown_without_their_password() -> None:
    assert redact_url("redis://:s3cret@main:6379/0") == "redis://:***@main:6379/0"
    assert redact_url("redis://imagen:s3cret@main/0") == "redis://imagen:***@main/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_without_a_stack_every_missing_part_fails_by_name_and_no_secret_is_printed(
    fresh_database_url: str, tmp_path: Path
) -> None:
    """Nothing runs: a production instance on an empty database, Redis on a closed port
    behind a password, no webserver."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(PRODUCTION_INSTANCE.read_text())
    config = tmp_path / "imagen.yaml"
    config.write_text(yaml.safe_dump({"backends": {"mock": {"type": "mock"}}}))
    broker = f"redis://:hunter2-secret@127.0.0.1:{closed_port()}/0"
    env = subprocess_env(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_URL=fresh_database_url,
        IMAGEN_CONFIG=str(config),
        IMAGEN_WEBSERVER_URL=f"http://127.0.0.1:{closed_port()}",
        **{BROKER_ENV: broker},
    )
    status, checks, text = doctor(env, plain=True)
    assert status == 1
    assert failing(checks) == {
        "daemon",
        "redis",
        "worker",
        "pool[imagen_gpu]",
        "pool[imagen_cloud]",
        "webserver",
    }
    assert checks["redis"].detail.startswith(f"{redact_url(broker)} (broker) does not answer")
    assert checks["config"].status == "ok"
    assert checks["dagster"].status == "ok"
    assert checks["imagen-db"].status == "skip"
    assert "hunter2-secret" not in text
    assert any(line.startswith("FAIL  redis ") for line in text.splitlines())


# -- a running stack -------------------------------------------------------------------------


def doctor_config(comfyui_url: str, output_dir: Path) -> dict[str, Any]:
    """imagen.yaml of the healthy stack: a cloud mock, a GPU box (the fake ComfyUI, two
    slots: the stack's pools are set for one box) and a Storage bucket."""
    return {
        "default_backend": "mock",
        "output": {"directory": str(output_dir)},
        "backends": {"mock": {"type": "mock"}, "gpu": {"type": "comfyui", "url": comfyui_url}},
        "cloud": {"bucket": "images"},
    }


@pytest.fixture(scope="module")
def fast_path(module_stack: DaemonStack) -> str:
    """The module stack's webserver and listener, started once, and the stack settled: the
    listener listens, and the holds the sensor's first tick took while the worker was still
    starting are released; the webserver's URL."""
    url = module_stack.start_fast_path()
    deadline = time.monotonic() + 60
    with psycopg.connect(module_stack.database_url, autocommit=True) as conn:
        while conn.execute(
            "SELECT count(*) = 0 OR EXISTS (SELECT 1 FROM imagen.job_holds) "
            "FROM pg_stat_activity WHERE query = %s",
            (f"LISTEN {CHANNEL}",),
        ).fetchone() != (False,):
            if time.monotonic() > deadline:
                pytest.fail("no listener, or holds still in force, after 60 s")
            time.sleep(0.2)
    return url


@pytest.fixture(scope="module")
def comfyui() -> Iterator[FakeComfyUI]:
    with running_fake_comfyui() as fake:
        yield fake


@pytest.fixture(scope="module")
def storage() -> Iterator[FakeStorage]:
    with running_fake_storage(STORAGE_KEY) as fake:
        fake.add_bucket("images")
        yield fake


@pytest.fixture
def healthy(
    running_stack: DaemonStack,
    fast_path: str,
    comfyui: FakeComfyUI,
    storage: FakeStorage,
    tmp_path: Path,
) -> tuple[DaemonStack, dict[str, str]]:
    """The running stack with the healthy imagen.yaml, and the environment doctor runs in
    (the services' own, plus the Storage credentials)."""
    running_stack.config_file.write_text(
        yaml.safe_dump(doctor_config(comfyui.url, tmp_path / "out"))
    )
    env = {
        **running_stack.env,
        "IMAGEN_WEBSERVER_URL": fast_path,
        "SUPABASE_URL": storage.url,
        "SUPABASE_SERVICE_ROLE_KEY": STORAGE_KEY,
    }
    return running_stack, env


def test_a_healthy_stack_passes_every_check(
    healthy: tuple[DaemonStack, dict[str, str]],
) -> None:
    _, env = healthy
    status, checks, text = doctor(env, plain=True)
    assert status == 0, text
    assert {name: check.status for name, check in checks.items()} == {
        "config": "ok",
        "imagen-db": "ok",
        "dagster": "ok",
        "daemon": "ok",
        "redis": "ok",
        "worker[dagster]": "ok",
        "worker[imagen_gpu]": "ok",
        "pool[imagen_gpu]": "ok",
        "pool[imagen_cloud]": "ok",
        "run-queue": "ok",
        "backend[gpu]": "ok",
        "backend[mock]": "ok",
        "storage": "ok",
        "listener": "ok",
        "webserver": "ok",
        "holds": "ok",
    }, text
    worker = f"worker@stack on {socket.gethostname()} ({WORKER_CONCURRENCY} processes)"
    assert checks["worker[imagen_gpu]"].detail == f"{worker} (backend 'gpu' runs there)"
    assert checks["worker[dagster]"].detail == f"{worker} (backend 'mock' runs there)"
    assert set(WORKER_QUEUES) == {"dagster", "imagen_gpu"}
    assert checks["pool[imagen_cloud]"].detail == (
        f"{POOL_LIMITS['imagen_cloud']} in force, as imagen.yaml needs"
    )
    assert checks["webserver"].detail.startswith(f"Dagster {dg.__version__} at ")
    assert checks["listener"].detail.startswith(f"1 session(s) listen on {CHANNEL}")
    assert STORAGE_KEY not in text


def test_pools_that_are_not_set_fail_by_name(
    healthy: tuple[DaemonStack, dict[str, str]],
) -> None:
    stack, env = healthy
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        storage = instance.event_log_storage
        for pool in POOL_LIMITS:
            storage.delete_concurrency_limit(pool)
        try:
            status, checks, text = doctor(env)
        finally:
            for pool, limit in POOL_LIMITS.items():
                storage.set_concurrency_slots(pool, limit)
    assert status == 1
    assert failing(checks) == {"pool[imagen_gpu]", "pool[imagen_cloud]"}, text
    assert checks["pool[imagen_cloud]"].detail == (
        "no limit of its own: 2 (not set: dagster.yaml's concurrency.pools.default_limit); "
        "imagen.yaml needs 8"
    )
    assert "FAIL  pool[imagen_cloud]" in text


def test_a_backend_that_is_down_fails_by_name(
    healthy: tuple[DaemonStack, dict[str, str]],
) -> None:
    stack, env = healthy
    stack.add_backend("gpu", {"type": "comfyui", "url": f"http://127.0.0.1:{closed_port()}"})
    status, checks, _ = doctor(env)
    assert status == 1
    assert failing(checks) == {"backend[gpu]"}
    assert checks["backend[gpu]"].detail.startswith("not reachable: ")


def test_the_listeners_webserver_that_does_not_answer_fails_by_name(
    healthy: tuple[DaemonStack, dict[str, str]],
) -> None:
    """IMAGEN_WEBSERVER_URL is where the listener (started from the same environment file)
    sends its runs: nothing answers there."""
    _, env = healthy
    wrong = f"http://127.0.0.1:{closed_port()}"
    status, checks, _ = doctor({**env, "IMAGEN_WEBSERVER_URL": wrong})
    assert status == 1
    assert failing(checks) == {"webserver"}
    assert checks["webserver"].detail.startswith(f"{wrong} does not answer (ConnectError)")
    assert checks["listener"].status == "ok"


def test_the_daemon_the_worker_and_redis_missing_in_turn_each_fail_by_name(
    daemon_stack: DaemonStack, tmp_path: Path
) -> None:
    """Redis and the worker run, the daemon never started; then the worker stops; then
    Redis."""
    stack = daemon_stack
    stack.start_broker()
    worker = stack.workers.start(
        "worker@stack", stack.env, queues=WORKER_QUEUES, concurrency=1, preload=False
    )
    env = {**stack.env, "IMAGEN_WEBSERVER_URL": f"http://127.0.0.1:{closed_port()}"}
    # The webserver is not part of this test.
    expected_elsewhere = {"webserver"}

    status, checks, _ = doctor(env)
    assert status == 1
    assert failing(checks) == {"daemon", *expected_elsewhere}
    assert checks["daemon"].detail == "no heartbeat from any daemon: dagster-daemon never ran"
    assert checks["worker[dagster]"].status == "ok"

    os.kill(worker.process.pid, signal.SIGTERM)  # a stopped worker takes its key away
    worker.process.wait(timeout=60)
    status, checks, text = doctor(env)
    assert failing(checks) == {
        "daemon",
        "worker[dagster]",
        "worker[imagen_gpu]",
        *expected_elsewhere,
    }
    assert checks["worker[dagster]"].detail == (
        "no imagen worker serves queue dagster (backend 'broken', 'gated', 'mock', 'steady' "
        "runs there); its jobs are held"
    )
    assert "start one with: imagen worker --queue dagster --hostname imagen@" in text
    assert checks["worker[imagen_gpu]"].status == "fail"

    stack.redis.stop()
    status, checks, _ = doctor(env)
    assert failing(checks) == {"daemon", "redis", "worker", *expected_elsewhere}
    assert checks["redis"].detail.startswith(f"{stack.redis.url} (broker) does not answer")

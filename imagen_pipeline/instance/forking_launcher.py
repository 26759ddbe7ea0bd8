"""A run launcher whose run workers are forks of a process that has the code loaded.

Dagster's ``DefaultRunLauncher`` asks the code server to start each run, and the code server
spawns a fresh interpreter that imports Dagster, the storage and the code location before
the first op runs: about three quarters of a run's CPU, which on a two-core host held the
queue at 23 to 40 runs a minute (docs/benchmarks.md). ``ForkingRunLauncher`` keeps one warm
:mod:`~imagen_pipeline.instance.forkserver` per code location (per code server
generation, so a reloaded location gets a fresh one) and forks a worker per run from it.
The run itself is unchanged: created, queued and shown exactly as before, executed by the
same function ``dagster api execute_run`` uses.

Workers run on the host of the process that launches them (the daemon, with the
QueuedRunCoordinator). Their pid is stored in run tags, so ``terminate`` (from the UI, the
webserver or the jobs sensor) and run monitoring's health check work from any process on
that host. A worker that dies without reporting is failed at once by the launcher that
forked it, and by run monitoring otherwise (for example after a daemon restart).

Configure it in ``dagster.yaml`` (scripts/dagster.postgres.yaml)::

    run_launcher:
      module: imagen_pipeline.instance.forking_launcher
      class: ForkingRunLauncher
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import dagster as dg
import psutil

# A run launcher is configured by class in dagster.yaml; Dagster exports neither the base
# class nor the types it is called with at the top level (dagster is pinned to one version).
from dagster._core.instance import InstanceRef
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.origin import JobPythonOrigin
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value
from dagster._utils import get_run_crash_explanation

PID_TAG = "imagen/worker_pid"
PID_CREATED_TAG = "imagen/worker_created"
HOST_TAG = "imagen/worker_host"
FORKSERVER_MODULE = "imagen_pipeline.instance.forkserver"
DEFAULT_START_TIMEOUT_S = 180
FORK_TIMEOUT_S = 30

logger = logging.getLogger("imagen.instance.forking_launcher")


class ForkserverError(Exception):
    """The forkserver could not be started or did not answer."""


@dataclass
class Forkserver:
    """One running forkserver process, the launches waiting for it, and its reader thread."""

    process: subprocess.Popen[str]
    key: tuple[str, ...]
    instance_ref: InstanceRef
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None
    started: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, threading.Event] = field(default_factory=dict)
    instance: dg.DagsterInstance | None = None

    @classmethod
    def start(
        cls, origin: JobPythonOrigin, key: tuple[str, ...], instance_ref: InstanceRef
    ) -> Forkserver:
        """Start a forkserver for ``origin``'s code location and its reader thread."""
        pointer = origin.repository_origin.code_pointer
        working_directory = getattr(pointer, "working_directory", None) or str(Path.cwd())
        process = subprocess.Popen(
            [origin.executable_path or sys.executable, "-m", FORKSERVER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=working_directory,
            text=True,
            bufsize=1,
        )
        forkserver = cls(process=process, key=key, instance_ref=instance_ref)
        init = {
            "instance_ref": serialize_value(instance_ref),
            "job_origin": serialize_value(origin),
        }
        forkserver.stdin.write(json.dumps(init) + "\n")
        forkserver.stdin.flush()
        threading.Thread(
            target=forkserver.read_answers, name=f"forkserver-{process.pid}", daemon=True
        ).start()
        return forkserver

    @property
    def stdin(self) -> IO[str]:
        """The forkserver's command stream."""
        assert self.process.stdin is not None
        return self.process.stdin

    @property
    def usable(self) -> bool:
        """Still running and not failed to load the code."""
        return self.process.poll() is None and self.failure is None

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the code location is loaded; raise if it is not."""
        if not self.ready.wait(timeout_s):
            self.close()
            raise ForkserverError(
                f"forkserver {self.process.pid} did not load the code location within "
                f"{timeout_s:.0f}s"
            )
        if self.failure is not None:
            raise ForkserverError(f"forkserver could not load the code location:\n{self.failure}")

    def request(self, run_id: str, timeout_s: float) -> int:
        """Ask for a worker for ``run_id``; returns its pid."""
        done = threading.Event()
        with self.lock:
            self.waiting[run_id] = done
            try:
                self.stdin.write(json.dumps({"run_id": run_id}) + "\n")
                self.stdin.flush()
            except OSError as error:
                raise ForkserverError(f"forkserver {self.process.pid} is gone: {error}") from None
        if not done.wait(timeout_s) or run_id not in self.started:
            raise ForkserverError(
                f"forkserver {self.process.pid} did not fork a worker for run {run_id} "
                f"within {timeout_s:.0f}s (exit code {self.process.poll()})"
            )
        return self.started.pop(run_id)

    def close(self) -> None:
        """Stop it forking; it exits once its workers have."""
        with contextlib.suppress(OSError):
            self.stdin.close()

    def read_answers(self) -> None:
        """Handle the forkserver's messages until it exits."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            event = message["event"]
            if event == "ready":
                self.ready.set()
            elif event == "failed":
                self.failure = message["message"]
                self.ready.set()
            elif event == "started":
                self.started[message["run_id"]] = message["pid"]
                self.waiting.pop(message["run_id"], threading.Event()).set()
            elif event == "exited":
                self.worker_exited(message["run_id"], message["exit_code"])
        if self.failure is None and not self.ready.is_set():
            self.failure = f"forkserver exited with code {self.process.wait()}"
        self.ready.set()
        for done in self.waiting.values():
            done.set()
        if self.instance is not None:
            self.instance.dispose()

    def worker_exited(self, run_id: str, exit_code: int) -> None:
        """Fail the run if its worker exited without finishing it (as the code server does)."""
        try:
            if self.instance is None:
                self.instance = dg.DagsterInstance.from_ref(self.instance_ref)
            run = self.instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                return
            message = get_run_crash_explanation(
                prefix=f"Run execution process for {run_id}", exit_code=exit_code
            )
            self.instance.report_engine_event(message, run, cls=ForkingRunLauncher)
            self.instance.report_run_failed(run)
        except Exception:
            logger.exception("could not check run %s after its worker exited", run_id)


class ForkserverPool:
    """The forkservers of this process, one per code location (shared by all launchers).

    Dagster builds more than one instance, and so more than one launcher, in a daemon; they
    all use the same warm processes.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forkservers: dict[str, Forkserver] = {}

    def get(
        self,
        origin: JobPythonOrigin,
        generation: str,
        instance_ref: InstanceRef,
        timeout_s: float,
    ) -> Forkserver:
        """The ready forkserver for this code location generation, started if needed.

        A forkserver is replaced when the code server generation, the instance or this
        process's environment (which its workers inherit) has changed since it started.
        """
        location_key = serialize_value(origin.repository_origin)
        environment = hashlib.sha256(repr(sorted(os.environ.items())).encode()).hexdigest()
        key = (location_key, generation, serialize_value(instance_ref), environment)
        with self.lock:
            current = self.forkservers.get(location_key)
            if current is not None and (current.key != key or not current.usable):
                current.close()
                current = None
            if current is None:
                current = Forkserver.start(origin, key, instance_ref)
                self.forkservers[location_key] = current
        current.wait_ready(timeout_s)
        return current


FORKSERVERS = ForkserverPool()


def process_created(pid: int) -> float | None:
    """Creation time of a live process ``pid`` (None when gone or a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.Error:
        return None


class ForkingRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as a fork of a warm process that has the code location loaded.

    Config: ``start_timeout_seconds``, how long a new forkserver may take to load the
    code location (the first run after a daemon start or a code reload waits for it).
    """

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        start_timeout_seconds: int = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        self._inst_data = inst_data
        self.start_timeout_s = start_timeout_seconds
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        """The config this launcher was built from."""
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """The ``run_launcher: config:`` fields."""
        return {
            "start_timeout_seconds": dg.Field(
                dg.IntSource,
                is_required=False,
                default_value=DEFAULT_START_TIMEOUT_S,
                description="Seconds a new forkserver may take to load the code location.",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> ForkingRunLauncher:
        """Build the launcher from its ``dagster.yaml`` block."""
        return cls(inst_data=inst_data, start_timeout_seconds=config_value["start_timeout_seconds"])

    def launch_run(self, context: LaunchRunContext) -> None:
        """Fork a worker for ``context.dagster_run`` and record its pid in the run's tags."""
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None:
            raise dg.DagsterInvariantViolationError(
                f"run {run.run_id} has no code origin; ForkingRunLauncher cannot execute it"
            )
        generation = ""
        if context.workspace is not None and run.remote_job_origin is not None:
            location_name = (
                run.remote_job_origin.repository_origin.code_location_origin.location_name
            )
            location = context.workspace.get_code_location(location_name)
            generation = str(getattr(location, "server_id", "") or "")
        forkserver = FORKSERVERS.get(
            origin, generation, self._instance.get_ref(), self.start_timeout_s
        )
        pid = forkserver.request(run.run_id, FORK_TIMEOUT_S)
        created = process_created(pid)
        self._instance.report_engine_event(
            f"Forked run worker (pid: {pid}) from forkserver (pid: {forkserver.process.pid}).",
            run,
            cls=self.__class__,
        )
        self._instance.add_run_tags(
            run.run_id,
            {
                PID_TAG: str(pid),
                PID_CREATED_TAG: repr(created or 0.0),
                HOST_TAG: socket.gethostname(),
            },
        )

    def terminate(self, run_id: str) -> bool:
        """Interrupt the run's worker (SIGINT, as the code server does); False if it is gone."""
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = self._live_worker_pid(run)
        if pid is None:
            self._instance.report_engine_event(
                "Unable to find the run worker process to send the termination request to.",
                dagster_run=run,
                cls=self.__class__,
            )
            return False
        os.kill(pid, signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        """Run monitoring may ask whether a worker is alive."""
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """RUNNING while the worker process lives, FAILED once it is gone."""
        if PID_TAG not in run.tags:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "run has no worker pid tag")
        if run.tags.get(HOST_TAG) != socket.gethostname():
            return CheckRunHealthResult(
                WorkerStatus.UNKNOWN, f"worker runs on host {run.tags.get(HOST_TAG)!r}"
            )
        if self._live_worker_pid(run) is None:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"run worker process {run.tags[PID_TAG]} is gone"
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING)

    def _live_worker_pid(self, run: dg.DagsterRun) -> int | None:
        """The run's worker pid if that very process (same creation time) still lives."""
        try:
            pid = int(run.tags[PID_TAG])
            created = float(run.tags.get(PID_CREATED_TAG, "0"))
        except (KeyError, ValueError):
            return None
        actual = process_created(pid)
        if actual is None or abs(actual - created) > 1.0:
            return None
        return pid

"""dagster-celery's ``CeleryRunLauncher`` with the fixes this pipeline needs.

``CeleryRunLauncher`` (dagster-celery) sends each run to a Celery queue; an ``imagen worker``
(:mod:`~imagen_pipeline.instance.celery_worker`) on any host that serves the queue executes
it in a warm pool process. A run goes to the queue named by its ``dagster-celery/queue`` tag
(``imagen_gpu`` for runs whose generate step uses the GPU pool, see
:mod:`imagen_pipeline.defs.run_identity`), else to ``default_queue``.

What this subclass changes, each for a reason the stock class gets wrong here:

- broker and result backend come from the environment (:func:`celery_urls`), read the same
  way by the instance and by every worker, and the result backend may not be ``rpc://``
  (its results reach only the process that sent the task, so no other process could check
  a worker's health);
- ``launch_run`` records the task id on the run before it sends the task (the stock method
  tags the run after sending; see :meth:`ImagenCeleryRunLauncher.launch_run`);
- ``terminate`` records the run as canceling before it revokes the task, and interrupts the
  worker with SIGINT: the run ends ``CANCELED`` as with the other launchers (the stock
  method revokes only, so the interrupted run ends ``FAILURE``);
- ``check_run_worker_health`` asks the worker that runs the task whether it is alive
  (Celery's ``ping``), as the task's state in the backend cannot tell a run whose whole
  worker died (the state stays ``STARTED``), nor survive a restart of the backend;
- resuming a run is off: the stock resume task does not accept the arguments the stock
  launcher sends it (``resume_job_args_packed`` against ``execute_job_args_packed``).

Dagster-internal names (the run-launcher types the public base class forces on a subclass,
the run task's argument type): :mod:`imagen_pipeline.instance.dagster_internals`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_celery.config import TASK_EXECUTE_JOB_NAME
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import (
    DAGSTER_CELERY_QUEUE_TAG,
    DAGSTER_CELERY_RUN_PRIORITY_TAG,
    DAGSTER_CELERY_TASK_ID_TAG,
)
from kombu.exceptions import OperationalError

from imagen_pipeline.instance.dagster_internals import (
    CheckRunHealthResult,
    ConfigurableClassData,
    ExecuteRunArgs,
    LaunchRunContext,
    WorkerStatus,
    launcher_instance,
    pack_value,
)
from imagen_pipeline.instance.worker_registry import (
    RegistryUnavailableError,
    live_workers,
    pool_processes_by_queue,
    registry_client,
)
from imagen_pipeline.queue.holds import LaunchPath
from imagen_pipeline.run_tags import TAG_WORKER

BROKER_ENV = "IMAGEN_CELERY_BROKER_URL"
BACKEND_ENV = "IMAGEN_CELERY_BACKEND_URL"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
PING_TIMEOUT_S = 2.0
RUN_END_EVENTS = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
SILENT_GRACE_S = 15.0
"""How long a run's worker may stay silent before its run counts as lost, unless
``silent_grace_seconds`` says otherwise: a broker restart makes live workers miss a ping or
two while they reconnect."""

CELERY_SETTINGS: dict[str, Any] = {
    # One run per pool process at a time, and no run waits behind another in a process.
    "worker_prefetch_multiplier": 1,
    # Acknowledge a task when it starts (Celery's default, said here because it matters):
    # with late acks a task whose worker died would be delivered again, to a run that run
    # monitoring has already failed and run retries have already replaced.
    "task_acks_late": False,
    # A run's console output is Dagster's log; Celery would re-log it all as WARNING.
    "worker_redirect_stdouts": False,
    "broker_connection_retry_on_startup": True,
    # A launch while the broker restarts waits for it (up to ~15 s) instead of failing.
    "task_publish_retry_policy": {
        "max_retries": 10,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 2,
    },
    "result_backend_always_retry": True,
    "result_backend_max_retries": 10,
}
"""Celery settings of the launcher's app, which workers use too (``config_source`` in
dagster.yaml overrides them)."""


def celery_urls() -> tuple[str, str]:
    """Broker and result backend URLs from ``$IMAGEN_CELERY_BROKER_URL`` and
    ``$IMAGEN_CELERY_BACKEND_URL`` (default: the broker), local Redis by default."""
    broker = os.environ.get(BROKER_ENV) or DEFAULT_BROKER_URL
    backend = os.environ.get(BACKEND_ENV) or broker
    if backend.startswith("rpc"):
        raise dg.DagsterInvariantViolationError(
            f"{BACKEND_ENV}={backend}: the result backend must be shared by every process "
            "(Redis); rpc:// results reach only the process that launched the run"
        )
    return broker, backend


class BrokerUnreachableError(RuntimeError):
    """The run was not sent: Redis, the broker and result store, does not answer."""


class ImagenCeleryRunLauncher(CeleryRunLauncher):
    """``CeleryRunLauncher`` whose terminated runs end ``CANCELED`` and whose health check
    notices a dead worker; broker and backend from the environment (:func:`celery_urls`).

    Config: ``default_queue`` (runs without a ``dagster-celery/queue`` tag), ``include``
    and ``config_source`` (Celery settings over :data:`CELERY_SETTINGS`), as in
    dagster-celery; ``broker`` and ``backend`` are refused, so they have one source;
    ``silent_grace_seconds`` (default :data:`SILENT_GRACE_S`).
    """

    def __init__(
        self,
        default_queue: str,
        include: list[str] | None = None,
        config_source: dict[str, Any] | None = None,
        inst_data: ConfigurableClassData | None = None,
        silent_grace_seconds: float = SILENT_GRACE_S,
    ) -> None:
        broker, backend = celery_urls()
        super().__init__(
            default_queue=default_queue,
            broker=broker,
            backend=backend,
            include=include,
            config_source={**CELERY_SETTINGS, **(config_source or {})},
            inst_data=inst_data,
        )
        self.silent_grace_s = silent_grace_seconds
        self._silent_since: dict[str, float] = {}
        self._silent_lock = threading.Lock()

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """dagster-celery's fields without ``broker`` and ``backend``, plus
        ``silent_grace_seconds``."""
        fields = dict(CeleryRunLauncher.config_type())  # type: ignore[arg-type]
        del fields["broker"], fields["backend"]
        fields["silent_grace_seconds"] = dg.Field(
            dg.Float,
            is_required=False,
            default_value=SILENT_GRACE_S,
            description="Seconds a run's worker may stay silent (no answer to a ping) before "
            "run monitoring fails its run as lost; keep it above a broker restart's reconnect.",
        )
        return fields

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> ImagenCeleryRunLauncher:
        """Build the launcher from its ``dagster.yaml`` block."""
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_resume_run(self) -> bool:
        """False: dagster-celery's resume task cannot be called as its launcher calls it."""
        return False

    def launch_run(self, context: LaunchRunContext) -> None:
        """Record the run's Celery task id on the run, then send the task to its queue.

        Dagster writes a run's tags by rewriting the whole stored run from a read of it, and
        the worker writes the run as soon as it takes the task (its own tag, then the run's
        start). The stock method sends first and tags after, so under load either write
        could lose the other's tag, and run monitoring then failed a running run ("run has
        no Celery task id tag", measured in 3 of 40 runs of a burst). With the id chosen
        and stored before the send, the worker is the run's only writer.
        """
        run = context.dagster_run
        if run.job_code_origin is None:
            raise dg.DagsterInvariantViolationError(f"run {run.run_id} has no job code origin")
        # Celery's send would retry its way through Redis' absence for 15-20 s, holding one
        # of the run queue's launch threads; the run is failed at once instead (and retried,
        # and its row held by the jobs sensor until Redis answers).
        unreachable = self.result_store_unreachable()
        if unreachable is not None:
            raise BrokerUnreachableError(
                f"run {run.run_id} not sent: the Celery broker and result store do not "
                f"answer ({unreachable})"
            )
        task_id = str(uuid.uuid4())
        queue = run.tags.get(DAGSTER_CELERY_QUEUE_TAG, self.default_queue)
        launcher_instance(self).add_run_tags(run.run_id, {DAGSTER_CELERY_TASK_ID_TAG: task_id})
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=launcher_instance(self).get_ref(),
            set_exit_code_on_failure=True,
        )
        self.celery.send_task(
            TASK_EXECUTE_JOB_NAME,
            kwargs={"execute_job_args_packed": pack_value(args)},
            task_id=task_id,
            queue=queue,
            routing_key=f"{queue}.{TASK_EXECUTE_JOB_NAME}",
            priority=run_priority(run),
        )
        launcher_instance(self).report_engine_event(
            f"Sent to Celery queue {queue} as task {task_id}.",
            run,
            cls=self.__class__,
        )

    def terminate(self, run_id: str) -> bool:
        """Mark the run canceling, then revoke its task and interrupt its worker with SIGINT.

        The run worker turns the interrupt into the end of the run; since the run is
        canceling, Dagster records it ``CANCELED`` (an interrupt of a run nobody asked to
        stop is a failure). A run whose task no worker has started yet is canceled here:
        the revoked task will not run it.
        """
        run = launcher_instance(self).get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        launcher_instance(self).report_run_canceling(run)
        if self._restore_an_end_overwritten(run_id):
            return False
        if task_id is None:
            launcher_instance(self).report_engine_event(
                "Unable to find the Celery task of this run to revoke.",
                dagster_run=run,
                cls=self.__class__,
            )
            return False
        result = self.celery.AsyncResult(task_id)
        result.revoke(terminate=True, signal="SIGINT")
        launcher_instance(self).report_engine_event(
            f"Revoked Celery task {task_id} (SIGINT to its worker process).",
            dagster_run=run,
            cls=self.__class__,
        )
        if run.status == dg.DagsterRunStatus.STARTING and result.state == "PENDING":
            current = launcher_instance(self).get_run_by_id(run_id)
            if current is not None and current.status == dg.DagsterRunStatus.CANCELING:
                launcher_instance(self).report_run_canceled(
                    current, message="Canceled before a Celery worker started the run."
                )
        return True

    def _restore_an_end_overwritten(self, run_id: str) -> bool:
        """True when the run had ended between this cancel's read of it and its CANCELING
        event: Dagster sets a run's status from its latest event, so that event made a
        finished run CANCELING again, with nothing left to end it (run monitoring would only
        after its cancel timeout, with the run holding a run slot until then). The run's end
        is recorded again, with a line that says so."""
        instance = launcher_instance(self)
        ends = instance.get_records_for_run(
            run_id, of_type=set(RUN_END_EVENTS), limit=1, ascending=False
        ).records
        current = instance.get_run_by_id(run_id)
        if not ends or current is None or current.status != dg.DagsterRunStatus.CANCELING:
            return False
        end = ends[0].event_log_entry.dagster_event
        assert end is not None
        message = f"The run had ended before its cancel was recorded ({end.event_type_value})."
        instance.report_engine_event(message, dagster_run=current, cls=self.__class__)
        if end.event_type == dg.DagsterEventType.RUN_FAILURE:
            instance.report_run_failed(current, message=end.message)
        elif end.event_type == dg.DagsterEventType.RUN_CANCELED:
            instance.report_run_canceled(current, message=end.message)
        else:
            instance.report_dagster_event(
                dg.DagsterEvent(
                    event_type_value=end.event_type_value,
                    job_name=current.job_name,
                    message=end.message,
                ),
                run_id,
            )
        return True

    def launch_path(self) -> LaunchPath:
        """Whether the broker answers and which queues live workers serve (the jobs sensor
        holds rows that could not start; see :mod:`imagen_pipeline.queue.holds`)."""
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, timeout=PING_TIMEOUT_S
                )
        except Exception as error:  # kombu raises its own and socket errors alike
            return LaunchPath(
                broker_error=str(error) or type(error).__name__, default_queue=self.default_queue
            )
        try:
            workers = live_workers(registry_client(celery_urls()[1]))
        except RegistryUnavailableError as error:
            return LaunchPath(default_queue=self.default_queue, registry_error=str(error))
        return LaunchPath(
            workers=pool_processes_by_queue(workers), default_queue=self.default_queue
        )

    def result_store_unreachable(self) -> str | None:
        """Why the result backend's Redis does not answer a ping within
        :data:`PING_TIMEOUT_S`, or None when it does (or it is not Redis)."""
        try:
            registry_client(celery_urls()[1]).ping()
        except RegistryUnavailableError:
            return None
        except Exception as error:  # redis-py's connection errors
            return str(error) or type(error).__name__
        return None

    def get_run_worker_debug_info(
        self, run: dg.DagsterRun, include_container_logs: bool | None = True
    ) -> str | None:
        """dagster-celery's account of the run's task, or one line when the result store
        is away (instead of a traceback in the daemon's log after half a minute of
        retries)."""
        unreachable = self.result_store_unreachable()
        if unreachable is not None:
            return f"run {run.run_id}: the Celery result store is unreachable ({unreachable})"
        return super().get_run_worker_debug_info(run, include_container_logs)

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """SUCCESS or FAILED as the task's result says (FAILURE or REVOKED: the process
        running it is gone); otherwise RUNNING while the run's worker answers a ping, FAILED
        once it has been silent, or unknown, for ``silent_grace_seconds``.

        The worker is the one the result backend says started the task (the run's
        ``imagen/worker_host`` tag if the backend lost it). An unreachable broker says
        nothing about the worker: RUNNING (the jobs sensor's stall rule covers a run that
        never reports again).
        """
        unreachable = self.result_store_unreachable()
        if unreachable is not None:
            # Celery would retry the read for half a minute, holding up run monitoring's
            # checks of every other run (start timeouts were noticed 30 s late).
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"result store unreachable, worker not checked: {unreachable}"
            )
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        if task_id is None:
            # Run monitoring's copy of the run may predate its tags; read the run again.
            run = launcher_instance(self).get_run_by_id(run.run_id) or run
            task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        if task_id is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "run has no Celery task id tag")
        try:
            meta = self.celery.backend.get_task_meta(task_id)
            state = meta.get("status")
            if state == "SUCCESS":
                return CheckRunHealthResult(WorkerStatus.SUCCESS)
            if state == "FAILURE":
                return CheckRunHealthResult(WorkerStatus.FAILED, "Celery task failed.")
            if state == "REVOKED":
                # A started run's task is revoked by terminate (the run is then canceling
                # and not checked here) or when its pool process is killed (Celery reports
                # a process once sent a revoke's signal as terminated, not lost).
                return CheckRunHealthResult(
                    WorkerStatus.FAILED, "Celery task revoked: its pool process was killed."
                )
            worker = started_by(meta) or run.tags.get(TAG_WORKER)
            if worker is None:
                return self._health_from_silence(run.run_id, None, state)
            answered = bool(
                self.celery.control.ping(destination=[worker], timeout=PING_TIMEOUT_S, limit=1)
            )
        except (OperationalError, ConnectionError, OSError) as error:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"broker unreachable, worker not checked: {error}"
            )
        if answered:
            with self._silent_lock:
                self._silent_since.pop(run.run_id, None)
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return self._health_from_silence(run.run_id, worker, state)

    def _health_from_silence(
        self, run_id: str, worker: str | None, state: str | None
    ) -> CheckRunHealthResult:
        """RUNNING until the run's worker (or, with none known, any worker) has been silent
        for ``silent_grace_seconds``, then FAILED."""
        now = time.monotonic()
        with self._silent_lock:
            silent_s = now - self._silent_since.setdefault(run_id, now)
            if silent_s >= self.silent_grace_s:
                self._silent_since.pop(run_id, None)
        if worker is None:
            silence = f"no Celery worker has reported the run's task (state {state})"
        else:
            silence = f"worker {worker} silent"
        if silent_s < self.silent_grace_s:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{silence} for {silent_s:.0f}s")
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"{silence} for {silent_s:.0f}s")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"Celery worker {worker} has not answered for {silent_s:.0f}s"
        )


def run_priority(run: dg.DagsterRun) -> int:
    """The run's ``dagster-celery/run_priority`` tag as an integer, 0 without one (as
    dagster-celery reads it)."""
    try:
        return int(run.tags.get(DAGSTER_CELERY_RUN_PRIORITY_TAG, 0))
    except ValueError:
        return 0


def started_by(meta: Mapping[str, Any]) -> str | None:
    """The worker (``name@host``) that started a task, from its ``STARTED`` result: Celery
    stores it there for tasks that track their start, as the run task does."""
    result = meta.get("result")
    if meta.get("status") == "STARTED" and isinstance(result, Mapping):
        hostname = result.get("hostname")
        return hostname if isinstance(hostname, str) else None
    return None

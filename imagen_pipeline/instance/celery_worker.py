"""The Celery worker that executes runs of an instance using
:class:`~imagen_pipeline.instance.celery_launcher.ImagenCeleryRunLauncher` (``imagen worker``).

It is Celery's own worker (prefork pool) on the launcher's app, so broker, backend and
Celery settings come from the instance config in ``$DAGSTER_HOME`` and the environment,
exactly as the launcher reads them. Each task is dagster-celery's ``execute_job`` (this
module's version of it, :func:`register_run_task`), which executes the run in the pool
process. Added around it, through Celery's signals:

- before a run starts, the run is tagged ``imagen/worker_host`` with the worker's name
  (``name@host``) and its log says which worker and host took it; the launcher's health
  check pings that worker;
- a run whose pool process died (``kill -9``, OOM) is failed at once by the worker's main
  process (as a parent process would for its child), and a run whose task raised outside
  Dagster's own error handling (the run could not be read) is failed with the traceback;
  run monitoring is the safety net for both (a code location that does not import is
  reported by Dagster itself: "Could not load job definition." with the traceback);
- pool processes die with the worker's main process (Linux ``PR_SET_PDEATHSIG``), so a
  worker is alive or gone as a whole, which is what the health check's ping can see;
- the main process announces the worker in the registry (:mod:`.worker_registry`: its
  queues and pool processes, renewed every few seconds) for the jobs sensor and
  ``imagen doctor``;
- before it starts, the worker gives the generate pools that have no limit of their own the
  limits imagen.yaml needs (:mod:`.pool_limits`, as ``imagen config limits`` computes them);
- the main process imports Dagster, dagster-celery and the instance's storage classes, and
  with ``preload`` the code location, before it forks the pool, so a pool process's first
  run does not pay for those imports.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import dagster as dg
from celery import Celery, Task, signals
from dagster_celery.config import TASK_EXECUTE_JOB_NAME

from imagen_pipeline.config.loader import find_config_path
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.instance.celery_launcher import ImagenCeleryRunLauncher, celery_urls
from imagen_pipeline.instance.dagster_internals import (
    ExecuteRunArgs,
    _execute_run_command_body,
    forget_rebuilt_jobs,
    unpack_value,
)
from imagen_pipeline.instance.file_compute_logs import ECHO_ENV
from imagen_pipeline.instance.pool_limits import set_pools_from_config
from imagen_pipeline.instance.worker_registry import (
    Heartbeat,
    RegistryUnavailableError,
    beacon_for,
    registry_client,
)
from imagen_pipeline.run_tags import TAG_WORKER

CODE_LOCATION_MODULE = "imagen_pipeline.definitions"
"""The code location ``workspace.yaml`` loads, preloaded by the worker."""
DEFAULT_CONCURRENCY = 4
"""Pool processes when the instance has no run queue limit to follow."""
PR_SET_PDEATHSIG = 1

logger = logging.getLogger("imagen.instance.celery_worker")
_pool_instances: dict[int, dg.DagsterInstance] = {}
_loaded_stamp: tuple[str, int, int, int] | None = None
"""The imagen.yaml (see :func:`config_stamp`) this pool process's code location was loaded
with."""


class WorkerSetupError(Exception):
    """The worker cannot start with this instance config."""


def launcher_of(instance: dg.DagsterInstance) -> ImagenCeleryRunLauncher:
    """The instance's run launcher, which must be :class:`ImagenCeleryRunLauncher`."""
    launcher = instance.run_launcher
    if not isinstance(launcher, ImagenCeleryRunLauncher):
        raise WorkerSetupError(
            f"the instance in {instance.root_directory} launches runs with "
            f"{type(launcher).__name__}, not ImagenCeleryRunLauncher: use "
            "scripts/dagster.postgres.yaml as its dagster.yaml (docs/deployment.md)"
        )
    return launcher


def default_concurrency(instance: dg.DagsterInstance) -> int:
    """The instance's ``max_concurrent_runs`` (every run can execute at once), else 4."""
    queue = instance.get_concurrency_config().run_queue_config
    return queue.max_concurrent_runs if queue is not None else DEFAULT_CONCURRENCY


def pool_instance() -> dg.DagsterInstance:
    """This pool process's instance (opened when the process starts, see
    :func:`open_pool_instance`; never in the main process)."""
    pid = os.getpid()
    if pid not in _pool_instances:
        _pool_instances[pid] = dg.DagsterInstance.get()
    return _pool_instances[pid]


def open_pool_instance(**_: Any) -> None:
    """In a new pool process: open its instance and connect its run storage now, so the
    process's first run does not wait for them (a failure is left to the first run)."""
    try:
        pool_instance().get_runs_count()
    except Exception:
        logger.exception("could not open the instance in pool process %s", os.getpid())


def run_id_of(kwargs: dict[str, Any] | None) -> str | None:
    """The run id in an ``execute_job`` task's arguments."""
    packed = (kwargs or {}).get("execute_job_args_packed")
    if not isinstance(packed, dict):
        return None
    run_id = getattr(unpack_value(packed), "run_id", None)
    return run_id if isinstance(run_id, str) else None


def die_with_parent(**_: Any) -> None:
    """In a new pool process: be killed when the worker's main process dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def announce_run(
    sender: Task | None = None, kwargs: dict[str, Any] | None = None, **_: Any
) -> None:
    """Before a run executes: tag it with this worker and say in its log where it runs."""
    run_id = run_id_of(kwargs)
    if sender is None or sender.name != TASK_EXECUTE_JOB_NAME or run_id is None:
        return
    worker = sender.request.hostname or socket.gethostname()
    try:
        instance = pool_instance()
        run = instance.get_run_by_id(run_id)
        if run is None:
            return
        instance.add_run_tags(run_id, {TAG_WORKER: worker})
        instance.report_engine_event(
            f"Celery worker {worker} (host {socket.gethostname()}, pid {os.getpid()}) "
            "is executing the run.",
            run,
        )
    except Exception:
        logger.exception("could not record worker %s for run %s", worker, run_id)


def fail_run(
    sender: Task | None = None,
    exception: BaseException | None = None,
    kwargs: dict[str, Any] | None = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    """A run's task failed outside Dagster's own error handling: end the run, with why.

    In a pool process: an error Dagster's run worker did not catch (it reports a code
    location that does not load itself), with its traceback. In the main process: the pool
    process running it died (``WorkerLostError``).
    """
    run_id = run_id_of(kwargs)
    if sender is None or sender.name != TASK_EXECUTE_JOB_NAME or run_id is None:
        return
    worker = sender.request.hostname or socket.gethostname()
    if os.getpid() in _pool_instances:
        traceback = getattr(einfo, "traceback", "")
        message = f"Celery worker {worker} could not execute the run: {exception!r}\n{traceback}"
    else:
        message = f"Celery worker {worker} lost the run's pool process: {exception}"
    end_run(run_id, message)


def end_killed_run(
    sender: Task | None = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    **_: Any,
) -> None:
    """In the main process: a run's pool process was killed by a signal after a revoke.

    A pool process that was once sent a revoke's signal (the launcher's SIGINT, which the
    run survives) is marked terminated by billiard for good: when it is later killed
    (``kill -9``, OOM), Celery reports its task revoked instead of lost. The launcher's own
    revoke arrives here with ``signum`` SIGINT and is left to the run.
    """
    if not terminated or signum == signal.SIGINT or request is None:
        return
    run_id = run_id_of(getattr(request, "kwargs", None))
    if sender is None or sender.name != TASK_EXECUTE_JOB_NAME or run_id is None:
        return
    worker = getattr(request, "hostname", None) or socket.gethostname()
    end_run(run_id, f"Celery worker {worker} lost the run's pool process (signal {signum}).")


UNENDED_RUN_MESSAGE = "The run's Celery task ended before the run recorded its end."


def end_run(run_id: str, message: str) -> None:
    """Record ``message`` in the run's log and end the run (CANCELED if it was being
    canceled, else FAILURE), unless it has finished."""
    try:
        if os.getpid() in _pool_instances:
            report_end(pool_instance(), run_id, message)
        else:
            with dg.DagsterInstance.get() as instance:
                report_end(instance, run_id, message)
    except Exception:
        logger.exception("could not end run %s after: %s", run_id, message)


def report_end(instance: dg.DagsterInstance, run_id: str, message: str) -> None:
    """See :func:`end_run`."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return
    instance.report_engine_event(message, run)
    if run.status == dg.DagsterRunStatus.CANCELING:
        instance.report_run_canceled(run)
    else:
        instance.report_run_failed(run)


def register_run_task(app: Celery) -> None:
    """dagster-celery's ``execute_job`` task (same name and arguments), executing every run
    of a pool process on that process's one instance (:func:`pool_instance`).

    The stock task opens a new instance per run. Dagster's Postgres storages do not close
    their pooled connections when an instance is disposed, so in a pool process, which
    outlives its runs, every run left its connections open until garbage collection: with
    six pool processes a burst of 100 runs took Postgres past its 100 connections ("too many
    clients already"). One instance per process keeps one set of connections and skips
    opening the storage for each run.
    """

    @app.task(bind=True, name=TASK_EXECUTE_JOB_NAME, track_started=True)
    def execute_job(_task: Task, execute_job_args_packed: dict[str, Any]) -> int:
        args = unpack_value(execute_job_args_packed, as_type=ExecuteRunArgs)
        try:
            reload_if_config_changed()
            return _execute_run_command_body(
                instance=pool_instance(),
                run_id=args.run_id,
                write_stream_fn=lambda _event: None,
                set_exit_code_on_failure=args.set_exit_code_on_failure is not False,
            )
        finally:
            # A cancel's SIGINT that lands before Dagster's run execution handles interrupts
            # (Celery reports the task started, Dagster still says STARTING) ends the task
            # with the run unfinished: it would stay CANCELING, holding a run slot, until
            # run monitoring's cancel timeout.
            end_run(args.run_id, UNENDED_RUN_MESSAGE)


def config_stamp() -> tuple[str, int, int, int] | None:
    """Which imagen.yaml a run would load and its version (path, inode, size, mtime), from
    one ``stat`` (the file is not read); None for the built-in default."""
    try:
        path = find_config_path()
        if path is None:
            return None
        stat = path.stat()
    except (ImagenError, OSError):
        return None
    return (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def reload_if_config_changed() -> None:
    """Before a run in a pool process: when imagen.yaml is not the file the process's last
    run loaded, forget the code location Dagster keeps, so this run loads it (and the file)
    again and follows the file as it is when the run starts."""
    global _loaded_stamp
    stamp = config_stamp()
    if stamp != _loaded_stamp:
        forget_rebuilt_jobs()
        _loaded_stamp = stamp


def announce_worker(queues: list[str], concurrency: int, hostname: str) -> None:
    """Keep this worker in the registry from when it is ready until it shuts down (a
    result backend that is not Redis: logged, the worker runs unlisted)."""
    try:
        client = registry_client(celery_urls()[1])
    except RegistryUnavailableError as error:
        logger.warning("this worker is not listed for the jobs sensor: %s", error)
        return
    heartbeat = Heartbeat(
        client,
        beacon_for(hostname, socket.gethostname(), os.getpid(), queues, concurrency, time.time()),
    )
    signals.worker_ready.connect(lambda **_: heartbeat.start(), weak=False)
    signals.worker_shutdown.connect(lambda **_: heartbeat.stop(), weak=False)


def worker_app(launcher: ImagenCeleryRunLauncher) -> Celery:
    """The launcher's Celery app with the run task and this module's signal handlers."""
    app = launcher.celery
    register_run_task(app)
    signals.worker_process_init.connect(die_with_parent, weak=False)
    signals.worker_process_init.connect(open_pool_instance, weak=False)
    signals.task_prerun.connect(announce_run, weak=False)
    signals.task_failure.connect(fail_run, weak=False)
    signals.task_revoked.connect(end_killed_run, weak=False)
    return app


def preload_code_location(module: str = CODE_LOCATION_MODULE) -> None:
    """Import the code location now; a failure is logged and left to each run to report."""
    try:
        importlib.import_module(module)
    except Exception:
        logger.exception("could not preload %s; each run will report why it cannot load", module)


def worker_argv(queues: list[str], concurrency: int, hostname: str, loglevel: str) -> list[str]:
    """Arguments of Celery's ``worker`` command for this pipeline."""
    return [
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        f"--hostname={hostname}",
        "--pool=prefork",
        # Hand a run only to an idle pool process, never queue it behind a running one.
        "-O",
        "fair",
        f"--loglevel={loglevel}",
    ]


def run_worker(
    queues: list[str] | None,
    concurrency: int | None,
    hostname: str,
    preload: bool,
    loglevel: str = "INFO",
) -> None:
    """Start Celery's worker on the instance's launcher app; returns when it stops."""
    with dg.DagsterInstance.get() as instance:
        launcher = launcher_of(instance)
        concurrency = concurrency or default_concurrency(instance)
        set_pools_from_config(instance)
    # A run's output goes to its compute log files (the UI); echoing it here would only
    # repeat it in the worker's journal, at four processes per run (file_compute_logs).
    os.environ.setdefault(ECHO_ENV, "0")
    app = worker_app(launcher)
    if preload:
        preload_code_location()
    served = queues or [launcher.default_queue]
    announce_worker(served, concurrency, hostname)
    # Everything imported so far moves out of the collector's reach: a pool process forked
    # from here no longer writes the shared pages' GC headers, so they stay shared (PSS).
    gc.freeze()
    app.worker_main(worker_argv(served, concurrency, hostname, loglevel))

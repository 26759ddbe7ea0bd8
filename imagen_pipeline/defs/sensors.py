"""``imagen_jobs_sensor``: turns pending ``imagen.jobs`` rows into ``generate_image`` runs and
keeps in-flight rows in line with their runs (the queue's safety net)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg

from imagen_pipeline.alerts.notify import Alerts, open_alerts
from imagen_pipeline.db.connection import DATABASE_URL_ENV
from imagen_pipeline.db.errors import DatabaseStep, database_errors
from imagen_pipeline.defs.job_runs import run_request_for
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource
from imagen_pipeline.defs.run_errors import run_failure
from imagen_pipeline.errors import ConfigError, ImagenError
from imagen_pipeline.generate.setup import Setup
from imagen_pipeline.queue import holds, pause, repository
from imagen_pipeline.queue.holds import (
    Hold,
    LaunchPath,
    alert_key,
    alert_text,
    alert_title,
    launch_holds,
)
from imagen_pipeline.queue.intake import take_batch
from imagen_pipeline.queue.reconcile import Decision, RunFacts, decide
from imagen_pipeline.queue.rows import JobRow
from imagen_pipeline.run_tags import (
    GPU_QUEUE,
    TAG_BACKEND,
    TAG_CELERY_QUEUE,
    TAG_JOB_ATTEMPT,
    TAG_JOB_ID,
    TAG_WILL_RETRY,
)

INTERVAL_ENV = "IMAGEN_SENSOR_INTERVAL_S"
DEFAULT_INTERVAL_S = 1
"""Evaluate the sensor on every loop of the sensor daemon (Dagster's smallest interval: 0
means its default of 30 s). The daemon loops every 5 s (``MIN_INTERVAL_LOOP_TIME`` in
dagster 1.13's ``dagster/_daemon/sensor.py``; ``imagen daemon`` takes another period from
``IMAGEN_SENSOR_LOOP_S``) and measures a sensor's interval from the start of its previous
tick (``get_elapsed``). A tick starts a moment after its loop does, so with an interval of
5 s the next loop, 5 s later, found less than 5 s gone and skipped: ticks 7 to 10 s apart
instead of 5. The NOTIFY listener is the fast path."""
CLAIM_BATCH = 50
RECONCILE_BATCH = 200
STALE_AFTER = timedelta(minutes=2)
STALLED_AFTER_ENV = "IMAGEN_RUN_STALLED_AFTER_S"
DEFAULT_STALLED_AFTER = timedelta(minutes=30)
BACKEND_PROBE_EVERY_S = 15.0
"""How often a backend whose outage holds rows is probed (``imagen backends --check``)."""
BACKEND_PROBE_TIMEOUT_S = 5.0
LIVE_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class QueueCursor:
    """Sensor cursor: where the round-robin reconciliation continues."""

    reconcile_after: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> QueueCursor:
        """Read the stored cursor (empty or unreadable: start over)."""
        try:
            return cls(**json.loads(raw)) if raw else cls()
        except (TypeError, ValueError):
            return cls()

    def dump(self) -> str:
        """Serialized form stored by Dagster."""
        return json.dumps({"reconcile_after": self.reconcile_after})


def stalled_after(environ: Mapping[str, str] = os.environ) -> timedelta:
    """How long a started run may go without an event (``$IMAGEN_RUN_STALLED_AFTER_S``)."""
    raw = environ.get(STALLED_AFTER_ENV, "").strip()
    if not raw:
        return DEFAULT_STALLED_AFTER
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{STALLED_AFTER_ENV}: must be whole seconds >= 1 (got {raw!r})")
    return timedelta(seconds=int(raw))


def idle_seconds(instance: dg.DagsterInstance, run_id: str, now: float) -> float | None:
    """Seconds since the run's newest event, or None if it has none."""
    records = instance.get_records_for_run(run_id, limit=1, ascending=False).records
    return now - records[0].timestamp if records else None


def speaking_runs(instance: dg.DagsterInstance, rows: list[JobRow]) -> dict[int, dg.RunRecord]:
    """The run that speaks for each row.

    For a row a run owns (``run_id``): that run, unless it has finished and a re-execution
    of it (from failure or all; launched from the UI, the API, the CLI or by run retries) is
    still unfinished; then that re-execution, which will take the row over. Re-executions
    are found through their parent run, so they need not carry the job's tags. For a row no
    run owns yet: the newest run created for its current attempt (by tags).
    """
    if not rows:
        return {}
    tagged = instance.get_run_records(
        filters=dg.RunsFilter(tags={TAG_JOB_ID: [str(row.id) for row in rows]})
    )
    by_id = {record.dagster_run.run_id: record for record in tagged}
    owners = sorted({row.run_id for row in rows if row.run_id})
    missing = [run_id for run_id in owners if run_id not in by_id]
    if missing:
        by_id.update(
            (record.dagster_run.run_id, record)
            for record in instance.get_run_records(filters=dg.RunsFilter(run_ids=missing))
        )
    live_children = live_reexecutions(
        instance, [by_id[i] for i in owners if i in by_id and by_id[i].dagster_run.is_finished]
    )
    speaking: dict[int, dg.RunRecord] = {}
    for row in rows:
        if row.run_id:
            record = live_children.get(row.run_id) or by_id.get(row.run_id)
        else:
            attempt = [
                r
                for r in tagged
                if r.dagster_run.tags.get(TAG_JOB_ID) == str(row.id)
                and r.dagster_run.tags.get(TAG_JOB_ATTEMPT) == str(row.claims)
            ]
            record = max(attempt, key=lambda r: r.create_timestamp, default=None)
        if record is not None:
            speaking[row.id] = record
    return speaking


def live_reexecutions(
    instance: dg.DagsterInstance, finished: list[dg.RunRecord]
) -> dict[str, dg.RunRecord]:
    """Unfinished re-executions of the ``finished`` runs, by parent run id.

    One query over the unfinished runs created since the earliest of those runs ended (a
    re-execution is created after its parent finished), so the work stays bounded by how
    many runs are in flight, whatever the size of the run history.
    """
    if not finished:
        return {}
    since = min(record.end_time or record.create_timestamp.timestamp() for record in finished)
    parents = {record.dagster_run.run_id for record in finished}
    candidates = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=LIVE_STATUSES, created_after=datetime.fromtimestamp(since - 1, UTC)
        )
    )
    children: dict[str, dg.RunRecord] = {}
    for record in sorted(candidates, key=lambda r: r.create_timestamp):
        parent = record.dagster_run.parent_run_id
        if parent in parents:
            children[parent] = record
    return children


def run_facts(
    instance: dg.DagsterInstance, rows: list[JobRow], stalled: timedelta
) -> dict[int, RunFacts]:
    """What reconciliation needs to know about each row's speaking run.

    Runs started longer than ``stalled`` ago also get their idle time (one event-log query
    each), so a run whose worker died can be told from a slow one.
    """
    facts: dict[int, RunFacts] = {}
    now = time.time()
    for job_id, record in speaking_runs(instance, rows).items():
        run = record.dagster_run
        failure = (
            run_failure(instance, run.run_id) if run.status == dg.DagsterRunStatus.FAILURE else None
        )
        long_running = (
            run.status == dg.DagsterRunStatus.STARTED
            and record.start_time is not None
            and now - record.start_time >= stalled.total_seconds()
        )
        facts[job_id] = RunFacts(
            run_id=run.run_id,
            status=run.status.value,
            will_retry=run.tags.get(TAG_WILL_RETRY) == "true",
            step_failure=failure.public if failure else None,
            fault=failure.fault if failure else None,
            failed_step=failure.step_key if failure else None,
            backend=run.tags.get(TAG_BACKEND),
            queue=run.tags.get(TAG_CELERY_QUEUE),
            idle_s=idle_seconds(instance, run.run_id, now) if long_running else None,
        )
    return facts


def apply(
    decision: Decision, row: JobRow, conn: psycopg.Connection, instance: dg.DagsterInstance
) -> None:
    """Carry out one reconciliation decision."""
    if decision.backend_down:
        holds.hold_backend(conn, decision.backend_down, decision.detail)
    if decision.kind == "requeue_lost":
        repository.requeue_lost(conn, row.id, row.claims, decision.public)
    elif decision.kind in ("fail", "fail_refund"):
        repository.fail(
            conn,
            row.id,
            decision.public,
            from_statuses=("queued", "running"),
            refund=decision.kind == "fail_refund",
        )
    elif decision.kind == "note_waiting":
        repository.note_waiting(conn, row.id, row.claims, decision.public)
    elif decision.kind == "finish" and decision.run_id:
        repository.finish(conn, row.id, decision.run_id, None)
    elif decision.kind == "cancel_run" and decision.run_id:
        if not instance.run_coordinator.cancel_run(decision.run_id):
            run = instance.get_run_by_id(decision.run_id)
            if run is not None and not run.is_finished:
                instance.report_run_canceled(run, "canceled in imagen.jobs; worker unreachable")
    elif decision.kind == "abandon_run" and decision.run_id:
        run = instance.get_run_by_id(decision.run_id)
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, decision.detail)
    elif decision.kind == "close_cancel":
        repository.close_cancel(conn, row.id)


def reconcile(
    conn: psycopg.Connection,
    instance: dg.DagsterInstance,
    after_id: int,
    log: dg.DagsterLogManager,
    path: LaunchPath | None = None,
) -> int:
    """Reconcile one batch of unsettled rows; returns the id to continue after (0: wrap)."""
    rows = repository.unsettled_jobs(conn, after_id, RECONCILE_BATCH)
    stalled = stalled_after()
    runs = run_facts(instance, rows, stalled)
    now = datetime.now(UTC)
    for row in rows:
        decision = decide(row, runs.get(row.id), now, STALE_AFTER, stalled, path)
        if decision.kind not in ("leave", "note_waiting"):
            log.info(f"imagen.jobs row {row.id}: {decision.kind} {decision.detail}".rstrip())
        if decision.kind != "leave":
            apply(decision, row, conn, instance)
    return rows[-1].id if len(rows) == RECONCILE_BATCH else 0


def launch_path(instance: dg.DagsterInstance) -> LaunchPath | None:
    """What the instance's run launcher reaches now, if it can tell (the Celery launcher
    of scripts/dagster.postgres.yaml can; a launcher that starts runs as local processes
    needs no broker and no worker)."""
    probe = getattr(instance.run_launcher, "launch_path", None)
    return probe() if callable(probe) else None


def worker_queues(setup: Setup, path: LaunchPath) -> dict[str, str]:
    """The worker queue each backend instance's runs are sent to (as :func:`run_tags`
    routes them)."""
    return {
        name: GPU_QUEUE if setup.backend(name).backend.pool == "gpu" else path.default_queue
        for name in setup.backends.names()
    }


def backend_answers(setup: Setup, name: str) -> bool:
    """Whether ``imagen backends --check``'s probe of backend ``name`` reaches it within
    :data:`BACKEND_PROBE_TIMEOUT_S` (a box that does not answer at all must not hold up the
    tick for the adapter's whole request timeout)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagen-probe")
    try:
        check = pool.submit(setup.backend(name).backend.check)
        return bool(check.result(timeout=BACKEND_PROBE_TIMEOUT_S).reachable)
    except (FutureTimeout, ImagenError):
        return False
    finally:
        pool.shutdown(wait=False)


def update_holds(
    conn: psycopg.Connection,
    setup: Setup,
    path: LaunchPath | None,
    log: dg.DagsterLogManager,
    alerts: Alerts,
) -> None:
    """Bring the broker, worker and backend holds up to date (the launch path's from this
    tick's look at it, a backend's once a probe finds its server back) and tell the
    operator: a problem for every hold in force (sent once while it lasts), its end."""
    ended: list[Hold] = []
    if path is not None:
        for kind, wanted in launch_holds(path, worker_queues(setup, path)).items():
            changes = holds.replace_holds(conn, kind, wanted)
            for hold in changes.began:
                log.warning(f"holding imagen.jobs rows ({hold.scope}): {hold.detail}")
            ended.extend(changes.ended)
    for hold in holds.backend_holds_due(conn, BACKEND_PROBE_EVERY_S):
        if hold.scope not in setup.backends or backend_answers(setup, hold.scope):
            holds.release(conn, hold)
            ended.append(hold)
    for hold in ended:
        log.info(f"released imagen.jobs rows ({hold.scope}): the {hold.kind} hold ended")
        alerts.resolved(alert_key(hold), alert_title(hold), alert_text(hold, ended=True))
    for hold in holds.current_holds(conn):
        alerts.problem(alert_key(hold), alert_title(hold), alert_text(hold))
    holds.explain_held_rows(conn, setup.config.default_backend)


def sensor_interval_s(environ: Mapping[str, str] = os.environ) -> int:
    """Sensor interval from ``$IMAGEN_SENSOR_INTERVAL_S`` (whole seconds, default 1: every
    loop of the daemon, which loops every 5 s unless ``IMAGEN_SENSOR_LOOP_S`` says
    otherwise, so anything up to the daemon's period acts as that period)."""
    raw = environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    if not raw.isdigit() or not 1 <= int(raw) <= 3600:
        raise ConfigError(f"{INTERVAL_ENV}: must be whole seconds from 1 to 3600 (got {raw!r})")
    return int(raw)


def default_sensor_status(environ: Mapping[str, str] = os.environ) -> dg.DefaultSensorStatus:
    """Running by default when ``$IMAGEN_DATABASE_URL`` is set where the code location
    loads, stopped otherwise: without a database there is no queue to poll, and a running
    sensor would only log a skipped tick every interval. Started by hand anyway, each tick's
    history says why it skipped."""
    if environ.get(DATABASE_URL_ENV, "").strip():
        return dg.DefaultSensorStatus.RUNNING
    return dg.DefaultSensorStatus.STOPPED


def build_imagen_jobs_sensor(
    minimum_interval_seconds: int = DEFAULT_INTERVAL_S,
    default_status: dg.DefaultSensorStatus | None = None,
) -> dg.SensorDefinition:
    """``imagen_jobs_sensor``, evaluated at most every N seconds; ``default_status`` None:
    :func:`default_sensor_status` of this process's environment."""

    @dg.sensor(
        name="imagen_jobs_sensor",
        job_name="generate_image",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status or default_sensor_status(),
        description="Launches one generate_image run per pending imagen.jobs row and "
        "reconciles rows whose runs finished, failed, were canceled or never started.",
    )
    def imagen_jobs_sensor(
        context: dg.SensorEvaluationContext,
        imagen: ImagenResource,
        imagen_db: ImagenDatabaseResource,
    ) -> dg.SensorResult | dg.SkipReason:
        return evaluate_queue(context, imagen, imagen_db)

    return imagen_jobs_sensor


def evaluate_queue(
    context: dg.SensorEvaluationContext,
    imagen: ImagenResource,
    imagen_db: ImagenDatabaseResource,
) -> dg.SensorResult | dg.SkipReason:
    """One tick: reconcile in-flight rows, claim pending rows (pending -> queued), request runs;
    while the queue is paused (:mod:`imagen_pipeline.queue.pause`) only the first."""
    if not imagen_db.configured():
        return dg.SkipReason(f"{imagen_db.url_env} is not set; the imagen.jobs queue is off")
    config = imagen.read()
    cursor = QueueCursor.parse(context.cursor)
    path = launch_path(context.instance)
    with (
        database_errors(DatabaseStep.CLAIM, imagen_db.url_env),
        imagen_db.connect() as conn,
        open_alerts(config.config.alerts, imagen_db.url()) as alerts,
    ):
        next_after = reconcile(conn, context.instance, cursor.reconcile_after, context.log, path)
        update_holds(conn, config, path, context.log, alerts)
        state = pause.current(conn)
        batch = None if state.paused else take_batch(conn, CLAIM_BATCH, config)
    new_cursor = QueueCursor(reconcile_after=next_after).dump()
    if batch is None:
        return dg.SensorResult(skip_reason=pause.skip_reason(state), cursor=new_cursor)
    for job_id in batch.exhausted:
        context.log.warning(f"imagen.jobs row {job_id} failed: no attempts left")
    for refused in batch.refused:
        context.log.warning(f"imagen.jobs row {refused.row.id} rejected: {refused.detail}")
    requests = [run_request_for(item.row, item.plan) for item in batch.admitted]
    if not requests:
        return dg.SensorResult(skip_reason="no pending imagen.jobs rows", cursor=new_cursor)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)

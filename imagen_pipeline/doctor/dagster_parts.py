"""The Dagster instance: its storage and schema, a fresh heartbeat of every daemon it needs,
and the pools and run-queue limit in force against what ``imagen config limits`` computes."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from imagen_pipeline.backends.capacity import GPU_POOL, gpu_capacity, pool_limits
from imagen_pipeline.doctor.report import Check
from imagen_pipeline.doctor.stack import PartUnavailableError, Stack
from imagen_pipeline.instance.pool_limits import gpu_run_limit_in_force, pools_in_force

if TYPE_CHECKING:
    import dagster as dg

HEARTBEAT_STALE_S = 90.0
"""A daemon beats every 30 s (Dagster's interval): three missed beats and it counts as gone.
(Dagster's own UI waits 30 minutes.)"""
APPLY = "imagen config limits --apply $DAGSTER_HOME/dagster.yaml"


def check_storage(stack: Stack) -> list[Check]:
    """The instance opens, and each of its storages has Dagster's current schema."""
    if not os.environ.get("DAGSTER_HOME"):
        return [
            Check(
                "dagster",
                "warn",
                "DAGSTER_HOME is not set: imagen generate uses its own SQLite instance; the "
                "daemon, the workers and the pools are those of the production instance",
                "export DAGSTER_HOME (the folder of scripts/dagster.postgres.yaml)",
            )
        ]
    try:
        instance = stack.instance.get()
    except PartUnavailableError as error:
        return [Check("dagster", "fail", str(error), "check DAGSTER_PG_URL and dagster.yaml")]
    behind = []
    for kind, storage in (
        ("runs", instance.run_storage),
        ("events", instance.event_log_storage),
        ("schedules", instance.schedule_storage),
    ):
        version = storage.alembic_version() if storage is not None else None
        if version is not None and version[0] != version[1]:
            behind.append(f"{kind} at {version[0]}, Dagster wants {version[1]}")
    where = _storage_where(instance)
    if behind:
        return [
            Check(
                "dagster",
                "fail",
                f"{where}: schema behind ({'; '.join(behind)})",
                "dagster instance migrate",
            )
        ]
    return [Check("dagster", "ok", f"{where}: schema current")]


def _storage_where(instance: dg.DagsterInstance) -> str:
    """The storage class and its database (``host:port/db``, no credentials) or folder."""
    data = instance.get_ref().storage_data
    name = data.class_name if data is not None else type(instance.run_storage).__name__
    url = getattr(instance.run_storage, "postgres_url", None)
    if not isinstance(url, str):
        return f"{name} in {instance.root_directory}"
    parts = urlsplit(url)
    return f"{name} at {parts.hostname}:{parts.port or 5432}{parts.path}"


def heartbeat_check(
    required: Sequence[str], beats: Mapping[str, tuple[float, str | None]], now: float
) -> Check:
    """The daemon's line from each required daemon's last heartbeat (timestamp, first error)."""
    if not required:
        return Check("daemon", "skip", "this instance needs no daemon")
    missing = [kind for kind in required if kind not in beats]
    stale = [
        kind for kind in required if kind in beats and now - beats[kind][0] > HEARTBEAT_STALE_S
    ]
    hint = "start dagster-daemon run (systemctl start imagen-daemon)"
    if missing and len(missing) == len(required):
        return Check(
            "daemon", "fail", "no heartbeat from any daemon: dagster-daemon never ran", hint
        )
    if missing or stale:
        newest = max(beats[kind][0] for kind in required if kind in beats)
        gone = ", ".join(sorted(missing + stale))
        return Check(
            "daemon",
            "fail",
            f"no fresh heartbeat from {gone} (newest {now - newest:.0f} s ago, stale after "
            f"{HEARTBEAT_STALE_S:.0f} s): what they run (the jobs sensor, the run queue, "
            "run monitoring) stops with them",
            hint,
        )
    oldest = min(beats[kind][0] for kind in required)
    errors = [f"{kind}: {beats[kind][1]}" for kind in required if beats[kind][1]]
    if errors:
        return Check(
            "daemon",
            "warn",
            f"{len(required)} daemons beat, with errors: {'; '.join(errors)}",
            "see dagster-daemon's log (journalctl -u imagen-daemon)",
        )
    return Check("daemon", "ok", f"{len(required)} daemons beat (oldest {now - oldest:.0f} s ago)")


def check_daemon(stack: Stack) -> list[Check]:
    """Every daemon the instance needs has a heartbeat younger than :data:`HEARTBEAT_STALE_S`."""
    try:
        instance = stack.instance.get()
    except PartUnavailableError as error:
        return [Check("daemon", "skip", str(error))]
    beats = {
        kind: (beat.timestamp, _first_error(beat.errors))
        for kind, beat in instance.get_daemon_heartbeats().items()
    }
    return [heartbeat_check(instance.get_required_daemon_types(), beats, time.time())]


def check_limits(stack: Stack) -> list[Check]:
    """Both pools and the run queue's GPU limit in force, against the computed ones."""
    try:
        instance = stack.instance.get()
        setup = stack.setup.get()
    except PartUnavailableError as error:
        return [Check("pools", "skip", str(error))]
    capacity = gpu_capacity(setup.backends)
    checks = []
    for pool in pools_in_force(instance, pool_limits(capacity)):
        line = f"pool[{pool.pool}]"
        if pool.state == "ok":
            checks.append(Check(line, "ok", f"{pool.limit} in force, as imagen.yaml needs"))
        elif pool.state == "unset":
            checks.append(
                Check(
                    line,
                    "fail",
                    f"no limit of its own: {pool.in_force()}; imagen.yaml needs {pool.computed}",
                    f"{APPLY}, or restart imagen worker (it sets pools that are not set)",
                )
            )
        else:
            checks.append(
                Check(
                    line,
                    "warn",
                    f"{pool.in_force()}; imagen.yaml needs {pool.computed}",
                    f"{APPLY} if the difference is not meant",
                )
            )
    checks.append(_run_queue_check(instance, capacity.run_limit))
    return checks


def _run_queue_check(instance: dg.DagsterInstance, computed: int) -> Check:
    in_force = gpu_run_limit_in_force(instance)
    tag = f"imagen/pool={GPU_POOL}"
    if in_force is None:
        return Check(
            "run-queue",
            "warn",
            f"dagster.yaml has no run-queue limit on GPU runs ({tag}); imagen.yaml needs "
            f"{computed}: a batch of GPU jobs can take every run slot",
            "copy its tag_concurrency_limits entry from scripts/dagster.postgres.yaml",
        )
    if in_force != computed:
        return Check(
            "run-queue",
            "warn",
            f"GPU runs ({tag}) limited to {in_force} in dagster.yaml; imagen.yaml needs {computed}",
            f"{APPLY}, then restart dagster-daemon",
        )
    return Check("run-queue", "ok", f"GPU runs ({tag}) limited to {in_force}, as needed")


def _first_error(errors: Sequence[object] | None) -> str | None:
    if not errors:
        return None
    message = str(getattr(errors[0], "message", errors[0])).strip()
    return (message.splitlines() or [""])[0]

"""Every private Dagster name the instance plumbing uses, in one place.

Dagster 1.13 has no public API for what these classes extend: a run launcher's types and
the task body dagster-celery runs, a compute log manager's capture, the class data every
configurable instance class receives, the event log's table of pool limits and its slot
allocation. ``PRIVATE_NAMES`` lists each (its module, who here uses it and why), checked
against dagster 1.13.27 (``CHECKED_AGAINST``, the pin in pyproject.toml); importing this
module resolves them from that list, and the rest of the package imports them from here.

After an upgrade that moves any of them, importing this module (so also pytest loading its
fixtures) raises one ImportError that names every name that moved, with its module, who
uses it and why, and the release the list was checked against.
``imagen_pipeline_tests/instance/test_dagster_internals.py`` checks each name on its own.
The imports under ``TYPE_CHECKING`` only tell type checkers and readers what each name is;
that test keeps them equal to the list.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.definitions.reconstruct import ReconstructableJob
    from dagster._core.execution.compute_logs import redirect_to_file
    from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
    from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
    from dagster._core.storage.event_log.schema import ConcurrencyLimitsTable
    from dagster._core.storage.local_compute_log_manager import (
        IO_TYPE_EXTENSION,
        LocalComputeLogManager,
    )
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import ConfigurableClassData, pack_value, unpack_value
    from dagster._utils import ensure_file, touch_file

CHECKED_AGAINST = "1.13.27"
"""The dagster release the names below were checked against: the pin in pyproject.toml."""


@dataclass(frozen=True)
class PrivateName:
    """One private Dagster name: where it lives, who here uses it and for what."""

    module: str
    name: str
    used_by: str
    why: str


PRIVATE_NAMES: tuple[PrivateName, ...] = (
    PrivateName(
        "dagster._cli.api",
        "_execute_run_command_body",
        "celery_worker",
        "the body of `dagster api execute_run`, which dagster-celery's run task calls",
    ),
    PrivateName(
        "dagster._grpc.types",
        "ExecuteRunArgs",
        "celery_launcher, celery_worker",
        "task args",
    ),
    PrivateName(
        "dagster._serdes",
        "pack_value",
        "celery_launcher",
        "packing the task args",
    ),
    PrivateName(
        "dagster._serdes",
        "unpack_value",
        "celery_worker",
        "unpacking the task args",
    ),
    PrivateName(
        "dagster._serdes",
        "ConfigurableClassData",
        "celery_launcher, file_compute_logs, pooled_postgres",
        "what Dagster passes to every class configured in dagster.yaml",
    ),
    PrivateName(
        "dagster._core.launcher",
        "CheckRunHealthResult",
        "celery_launcher",
        "the run launcher's health check answer",
    ),
    PrivateName(
        "dagster._core.launcher",
        "LaunchRunContext",
        "celery_launcher",
        "launch_run",
    ),
    PrivateName(
        "dagster._core.launcher",
        "WorkerStatus",
        "celery_launcher",
        "health states",
    ),
    PrivateName(
        "dagster._core.storage.local_compute_log_manager",
        "LocalComputeLogManager",
        "file_compute_logs",
        "the class extended (configured in dagster.yaml by module path)",
    ),
    PrivateName(
        "dagster._core.storage.local_compute_log_manager",
        "IO_TYPE_EXTENSION",
        "file_compute_logs",
        "the stdout/stderr file extensions the UI reads",
    ),
    PrivateName(
        "dagster._core.storage.compute_log_manager",
        "CapturedLogContext",
        "file_compute_logs",
        "what capture_logs yields",
    ),
    PrivateName(
        "dagster._core.storage.compute_log_manager",
        "ComputeIOType",
        "file_compute_logs",
        "streams",
    ),
    PrivateName(
        "dagster._core.execution.compute_logs",
        "redirect_to_file",
        "file_compute_logs",
        "the capture without the tail -F mirror",
    ),
    PrivateName(
        "dagster._utils",
        "ensure_file",
        "file_compute_logs",
        "capture files",
    ),
    PrivateName(
        "dagster._utils",
        "touch_file",
        "file_compute_logs",
        "end-of-capture marker",
    ),
    PrivateName(
        "dagster._core.definitions.reconstruct",
        "ReconstructableJob",
        "celery_worker",
        "its cache of the last job a process rebuilt, cleared when imagen.yaml changed",
    ),
    PrivateName(
        "dagster._core.storage.event_log.schema",
        "ConcurrencyLimitsTable",
        "pooled_postgres",
        "the pools' limit rows, written with one upsert when a pool gets its default limit",
    ),
)
"""The private names the package uses, resolved from this list when the module is imported."""

PRIVATE_ATTRIBUTES: tuple[PrivateName, ...] = (
    PrivateName(
        "dagster._core.launcher.RunLauncher",
        "_instance",
        "celery_launcher",
        "the instance a launcher was registered with (Dagster's own launchers read it so)",
    ),
    PrivateName(
        "dagster._core.storage.local_compute_log_manager.LocalComputeLogManager",
        "_base_dir",
        "file_compute_logs",
        "the capture folder, set from the instance when dagster.yaml names none, and read "
        "by housekeeping to find the folders of deleted runs",
    ),
    PrivateName(
        "dagster._core.storage.event_log.base.EventLogStorage",
        "_instance",
        "pooled_postgres",
        "the instance whose dagster.yaml gives a pool's default limit",
    ),
    PrivateName(
        "dagster._core.storage.event_log.sql_event_log.SqlEventLogStorage",
        "_allocate_concurrency_slots",
        "pooled_postgres",
        "a pool's slot rows brought to its limit, in the transaction that set the limit",
    ),
    PrivateName(
        "dagster._core.storage.schedules.sql_schedule_storage.SqlScheduleStorage",
        "_has_instigators_table",
        "pooled_postgres",
        "overridden: the catalog check the sensor daemon asks on every tick, asked once",
    ),
    PrivateName(
        "dagster._daemon.sensor",
        "MIN_INTERVAL_LOOP_TIME",
        "daemon",
        "the sensor daemon's period (5 s), set by `imagen daemon` from IMAGEN_SENSOR_LOOP_S",
    ),
)
"""Private attributes read or set through the functions below, or overridden."""


def find(entry: PrivateName) -> Any:
    """The object ``entry`` names in the installed Dagster; an ImportError saying why it
    cannot be found."""
    try:
        module = importlib.import_module(entry.module)
    except ImportError as error:
        raise ImportError(f"{entry.module} cannot be imported ({error})") from error
    try:
        return getattr(module, entry.name)
    except AttributeError:
        raise ImportError(f"{entry.module} has no {entry.name}") from None


def moved_message(moved: Iterable[tuple[PrivateName, str]]) -> str:
    """One message for every private name that cannot be found: where it was, why not, who
    uses it for what, and the release the list was checked against."""
    return "\n".join(
        [
            "These private Dagster names, listed in imagen_pipeline/instance/"
            "dagster_internals.py, cannot be found in the installed dagster "
            f"{dg.__version__}; the list was checked against dagster {CHECKED_AGAINST} "
            "(the pin in pyproject.toml):",
            *(
                f"- {entry.module}.{entry.name}: {problem}; used by {entry.used_by} "
                f"(imagen_pipeline/instance/) for {entry.why}"
                for entry, problem in moved
            ),
            "Find where each lives now and change its entry in PRIVATE_NAMES and its import "
            f"under TYPE_CHECKING there, or install dagster {CHECKED_AGAINST} again.",
        ]
    )


def resolve(entries: Iterable[PrivateName]) -> dict[str, Any]:
    """Each entry's object by its name; one ImportError naming every entry that cannot be
    found, if any."""
    found: dict[str, Any] = {}
    moved: list[tuple[PrivateName, str]] = []
    for entry in entries:
        try:
            found[entry.name] = find(entry)
        except ImportError as error:
            moved.append((entry, str(error)))
    if moved:
        raise ImportError(moved_message(moved))
    return found


# Binds at run time the names imported above under TYPE_CHECKING.
globals().update(resolve(PRIVATE_NAMES))


def launcher_instance(launcher: Any) -> dg.DagsterInstance:
    """The instance a run launcher was registered with."""
    return launcher._instance


def storage_instance(storage: Any) -> dg.DagsterInstance | None:
    """The instance an event log storage was registered with, if any."""
    return storage._instance if storage.has_instance else None


def allocate_pool_slots(storage: Any, conn: Any, pool: str, limit: int) -> None:
    """Add or remove ``pool``'s slot rows until there are ``limit``, in ``conn``'s
    transaction (Dagster's own step of ``set_concurrency_slots``)."""
    storage._allocate_concurrency_slots(conn, pool, limit)


def set_capture_folder(manager: LocalComputeLogManager, folder: str) -> None:
    """Point a local compute log manager at ``folder``."""
    manager._base_dir = folder


def capture_folder_of(manager: LocalComputeLogManager) -> str:
    """The folder a local compute log manager captures into."""
    return manager._base_dir


def set_sensor_loop_seconds(seconds: float) -> None:
    """Make this process's sensor daemon look at its sensors every ``seconds`` (Dagster's
    loop reads the module's constant at each pass)."""
    import dagster._daemon.sensor as sensor_daemon

    sensor_daemon.MIN_INTERVAL_LOOP_TIME = seconds  # type: ignore[assignment]


def forget_rebuilt_jobs() -> None:
    """Make this process load the code location again for its next run: Dagster keeps the
    last job (and repository) it rebuilt from a run's origin (``functools.lru_cache`` on
    ``ReconstructableJob``)."""
    ReconstructableJob.get_definition.cache_clear()
    ReconstructableJob.get_repository_definition.cache_clear()


__all__ = [
    "IO_TYPE_EXTENSION",
    "CapturedLogContext",
    "CheckRunHealthResult",
    "ComputeIOType",
    "ConcurrencyLimitsTable",
    "ConfigurableClassData",
    "ExecuteRunArgs",
    "LaunchRunContext",
    "LocalComputeLogManager",
    "ReconstructableJob",
    "WorkerStatus",
    "_execute_run_command_body",
    "ensure_file",
    "pack_value",
    "redirect_to_file",
    "touch_file",
    "unpack_value",
]

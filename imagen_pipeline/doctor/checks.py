"""Every check, in the order of the report: configuration, databases, the Dagster instance,
where runs go, the limits, the backends and services, the fast path."""

from __future__ import annotations

from imagen_pipeline.doctor import dagster_parts, databases, runs, services
from imagen_pipeline.doctor.report import Check, Probe, run_probes
from imagen_pipeline.doctor.stack import PartUnavailableError, Stack


def check_config(stack: Stack) -> list[Check]:
    """imagen.yaml loads, with its backends."""
    try:
        setup = stack.setup.get()
    except PartUnavailableError as error:
        return [Check("config", "fail", str(error), "imagen config validate")]
    return [
        Check(
            "config",
            "ok",
            f"{setup.source_label}: {len(setup.backends)} backends, default "
            f"{setup.config.default_backend!r}",
        )
    ]


def probes(stack: Stack) -> list[Probe]:
    """The probes of ``stack``, in report order."""
    return [
        Probe("config", lambda: check_config(stack)),
        Probe("imagen-db", databases.check_imagen_database),
        Probe("dagster", lambda: dagster_parts.check_storage(stack)),
        Probe("daemon", lambda: dagster_parts.check_daemon(stack)),
        Probe("redis", lambda: runs.check_redis(stack)),
        Probe("worker", lambda: runs.check_workers(stack)),
        Probe("pools", lambda: dagster_parts.check_limits(stack)),
        *services.backend_probes(stack),
        Probe("storage", lambda: services.check_bucket(stack)),
        Probe("listener", databases.check_listener),
        Probe("webserver", lambda: services.check_webserver(stack)),
        Probe("holds", databases.check_holds),
    ]


def diagnose(config_path: str | None, webserver_url: str, timeout_s: float) -> list[Check]:
    """Run every check of the stack at once; each that has not answered within
    ``timeout_s`` is a failure of its part. The instance is disposed of afterwards (a check
    still hanging on it then fails in its thread, which nobody waits for)."""
    stack = Stack(config_path, webserver_url)
    try:
        return run_probes(probes(stack), timeout_s)
    finally:
        stack.close()

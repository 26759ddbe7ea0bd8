"""``imagen_alerts_sensor``: a run that failed for an operator-side reason (the server's
set-up or code, an outage) alerts the operator; one failed for its own request does not.

Thin: whose fault the failure is comes from :func:`~imagen_pipeline.defs.run_errors.run_fault`,
the alert from :func:`~imagen_pipeline.alerts.run_failures.run_failure_alert`, dedupe and
sending from :mod:`imagen_pipeline.alerts.notify`. The ``alerts:`` block is read at every
evaluation, like the jobs sensor reads ``imagen.yaml``.
"""

from __future__ import annotations

import dagster as dg

from imagen_pipeline.alerts.notify import open_alerts
from imagen_pipeline.alerts.run_failures import run_failure_alert
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource
from imagen_pipeline.defs.run_errors import run_fault, run_public_failure, run_step_failure
from imagen_pipeline.defs.sensors import default_sensor_status
from imagen_pipeline.generate.budget import BudgetExceededError


def build_alerts_sensor(
    default_status: dg.DefaultSensorStatus | None = None,
) -> dg.SensorDefinition:
    """``imagen_alerts_sensor``; ``default_status`` None: running where the imagen database
    is configured (:func:`~imagen_pipeline.defs.sensors.default_sensor_status`)."""

    @dg.run_failure_sensor(
        name="imagen_alerts_sensor",
        default_status=default_status or default_sensor_status(),
        description="Alerts the operator (alerts: in imagen.yaml) of runs that failed for the "
        "server's set-up or code or an outage, once per kind of failure and repeat window; "
        "never of a run that failed for its own request.",
    )
    def imagen_alerts_sensor(
        context: dg.RunFailureSensorContext,
        imagen: ImagenResource,
        imagen_db: ImagenDatabaseResource,
    ) -> dg.SkipReason | None:
        return alert_run_failure(context, imagen, imagen_db)

    return imagen_alerts_sensor


def alert_run_failure(
    context: dg.RunFailureSensorContext,
    imagen: ImagenResource,
    imagen_db: ImagenDatabaseResource,
) -> dg.SkipReason | None:
    """Alert the failed run of ``context``, or say why not."""
    alerts = open_alerts(imagen.alerts_now(), imagen_db.url())
    if not alerts.enabled:
        return dg.SkipReason(alerts.describe())
    run = context.dagster_run
    if run_public_failure(context.instance, run.run_id) == BudgetExceededError.public_summary:
        return dg.SkipReason(f"run {run.run_id}: the budget check alerted its budget used up")
    summary = run_step_failure(context.instance, run.run_id) or context.failure_event.message
    fault = run_fault(context.instance, run.run_id)
    alert = run_failure_alert(fault, summary or "", run.run_id, run.job_name)
    if alert is None:
        return dg.SkipReason(f"run {run.run_id} failed for its own request: not alerted")
    alerts.event(alert.key, alert.title, alert.text)
    return None

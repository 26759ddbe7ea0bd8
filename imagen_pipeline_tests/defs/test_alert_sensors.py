"""``imagen_alerts_sensor`` on real failed runs: evaluated with Dagster's run status sensor
context against the instance that holds the runs, it alerts a loopback webhook once per kind
of operator-side failure and never for a run that failed for its own request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from imagen_pipeline.definitions import defs
from imagen_pipeline.defs.alert_sensors import build_alerts_sensor
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource
from imagen_pipeline_tests.fakes.webhook_server import FakeWebhook
from imagen_pipeline_tests.fixtures.alerts import alerts_block
from imagen_pipeline_tests.fixtures.imagen import file_resources

MISSING_TOKEN_ENV = "IMAGEN_TEST_UNSET_REPLICATE_TOKEN"
FLUX = {"type": "replicate", "model": "black-forest-labs/flux-dev", "api_token_env": ""}


def execute(
    instance: dg.DagsterInstance, config_file: Path, **request: Any
) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": "a fox", **request}}},
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )


def evaluate(
    instance: dg.DagsterInstance, config_file: Path, result: dg.ExecuteInProcessResult
) -> dg.SkipReason | None:
    """The sensor's evaluation of the failed run of ``result``, as the daemon makes it."""
    assert not result.success
    [failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    run = instance.get_run_by_id(result.run_id)
    assert failure.dagster_event is not None and run is not None
    context = dg.build_run_status_sensor_context(
        sensor_name="imagen_alerts_sensor",
        dagster_event=failure.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources={
            "imagen": ImagenResource(config_path=str(config_file)),
            "imagen_db": ImagenDatabaseResource(),
        },
    ).for_run_failure()
    return build_alerts_sensor(dg.DefaultSensorStatus.STOPPED)(context)


@pytest.fixture
def flux_without_token(write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """imagen.yaml whose default backend's token variable is unset, with alerts on."""
    monkeypatch.delenv(MISSING_TOKEN_ENV, raising=False)
    return write_config(
        {
            "default_backend": "flux",
            "backends": {"flux": {**FLUX, "api_token_env": MISSING_TOKEN_ENV}},
            "alerts": alerts_block(),
        }
    )


def test_runs_failing_for_a_server_reason_alert_once(
    migrated_database_url: str,
    flux_without_token: Path,
    dagster_instance: dg.DagsterInstance,
    alert_webhook: FakeWebhook,
) -> None:
    first = execute(dagster_instance, flux_without_token)
    second = execute(dagster_instance, flux_without_token)
    assert evaluate(dagster_instance, flux_without_token, first) is None
    assert evaluate(dagster_instance, flux_without_token, second) is None
    [alert] = [request.json() for request in alert_webhook.requests]
    assert alert["alert"]["key"].startswith("run-failed:server:")
    assert alert["title"].startswith(
        "Runs failing (server set-up or code): backends.flux.api_token_env: environment variable"
    )
    assert alert["message"].startswith(
        f"Run {first.run_id} of generate_image failed: backends.flux.api_token_env: environment "
        f"variable {MISSING_TOKEN_ENV} is not set"
    )


def test_a_run_failing_for_its_own_request_alerts_nobody(
    migrated_database_url: str,
    flux_without_token: Path,
    dagster_instance: dg.DagsterInstance,
    alert_webhook: FakeWebhook,
) -> None:
    result = execute(dagster_instance, flux_without_token, backend="nope")
    skipped = evaluate(dagster_instance, flux_without_token, result)
    assert skipped == dg.SkipReason(f"run {result.run_id} failed for its own request: not alerted")
    assert alert_webhook.requests == []


def test_a_budget_failure_is_alerted_by_the_budget_check_and_not_again(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    alert_webhook: FakeWebhook,
) -> None:
    config_file = write_config(
        {
            "backends": {"mock": {"type": "mock", "cost_usd": 1.0}},
            "budget": {"daily_usd": 0.5},
            "alerts": alerts_block(),
        }
    )
    result = execute(dagster_instance, config_file)
    assert evaluate(dagster_instance, config_file, result) == dg.SkipReason(
        f"run {result.run_id}: the budget check alerted its budget used up"
    )
    assert [request.json()["alert"]["key"] for request in alert_webhook.requests] == [
        "budget:budget.daily_usd"
    ]


def test_without_alerts_the_sensor_says_why_it_skips(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    alert_webhook: FakeWebhook,
) -> None:
    config_file = write_config({"backends": {"mock": {"type": "mock", "fail_permanent": "x"}}})
    result = execute(dagster_instance, config_file)
    assert evaluate(dagster_instance, config_file, result) == dg.SkipReason(
        "alerts off: imagen.yaml has no alerts: block"
    )
    assert alert_webhook.requests == []


@pytest.mark.parametrize(
    ("database_url", "status"),
    [
        ("postgresql://postgres@127.0.0.1/imagen", dg.DefaultSensorStatus.RUNNING),
        ("", dg.DefaultSensorStatus.STOPPED),
    ],
)
def test_the_code_location_has_the_sensor_running_where_it_has_a_database(
    monkeypatch: pytest.MonkeyPatch, database_url: str, status: dg.DefaultSensorStatus
) -> None:
    monkeypatch.setenv("IMAGEN_DATABASE_URL", database_url)
    sensor = defs().resolve_sensor_def("imagen_alerts_sensor")
    assert isinstance(sensor, dg.RunStatusSensorDefinition)
    assert sensor.default_status == status

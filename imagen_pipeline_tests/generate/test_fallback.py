"""``fallback:``: when a backend cannot take the job, the next instance makes the image,
within the budget, and every record of the image says why."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from imagen_pipeline.backends.comfyui.servers import Server
from imagen_pipeline.backends.registry import build_backend
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.run_errors import run_step_failure
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.generate.setup import parse_setup
from imagen_pipeline_tests.fakes.comfyui_server import running_fake_comfyui
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.webhook_server import FakeWebhook
from imagen_pipeline_tests.fixtures.alerts import alerts_block
from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT, file_resources, step_failure_text


def run(instance: dg.DagsterInstance, config_file: Path) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": "a fox", "width": 512, "height": 512}}},
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )


def gpu_block(*urls: str, **fields: Any) -> dict[str, Any]:
    servers = [{"url": url, "label": f"box{index}"} for index, url in enumerate(urls)]
    return {
        "type": "comfyui",
        "servers": servers,
        "fallback": ["mock"],
        "reconnect_grace_s": 0.5,
        "poll_interval_s": 0.02,
        **fields,
    }


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_every_server_down_the_fallback_makes_the_image_and_the_lineage_says_why(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    down = [f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"]
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {"gpu": gpu_block(*down), "mock": {"type": "mock"}},
        }
    )
    result = run(dagster_instance, config_file)
    assert result.success, step_failure_text(result)
    reason = "fell back from gpu: 2 servers unreachable"
    [stored] = result.output_for_node("write_files")
    sidecar = json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))
    assert sidecar["backend"] == {
        "instance": "mock",
        "type": "mock",
        "options": {},
        "fallback": reason,
    }
    materialization = result.asset_materializations_for_node("write_files")[0]
    assert materialization.metadata["fallback"].value == reason
    assert materialization.metadata["backend"].value == "mock"
    assert rows(
        migrated_database_url,
        "SELECT backend_instance, status, fallback_reason FROM mai.imagen_usage",
    ) == [("mock", "succeeded", reason)]
    assert rows(migrated_database_url, "SELECT backend, fallback_reason FROM imagen.images") == [
        ("mock", reason)
    ]
    tags = dagster_instance.get_run_by_id(result.run_id).tags  # type: ignore[union-attr]
    assert (tags["imagen/backend"], tags["imagen/fallback"]) == ("gpu", "mock")
    logs = "\n".join(str(r.user_message) for r in dagster_instance.all_logs(result.run_id))
    assert f"{reason}; trying 'mock'" in logs
    assert f"{reason}; made by 'mock': " in logs


def test_a_fallback_taken_alerts_the_operator_once_and_no_log_has_the_webhook_url(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    alert_webhook: FakeWebhook,
) -> None:
    down = [f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"]
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {"gpu": gpu_block(*down), "mock": {"type": "mock"}},
            "alerts": alerts_block(),
        }
    )
    first, second = run(dagster_instance, config_file), run(dagster_instance, config_file)
    assert first.success and second.success, step_failure_text(first)
    [alert] = [request.json() for request in alert_webhook.requests]
    assert alert["alert"] == {"kind": "event", "key": "fallback:gpu"}
    assert alert["title"] == "Fallback taken: gpu -> mock"
    assert alert["message"] == (
        f"fell back from gpu: 2 servers unreachable; run {first.run_id} had its image made by "
        "'mock' instead."
    )
    for result in (first, second):
        logs = "\n".join(str(r.user_message) for r in dagster_instance.all_logs(result.run_id))
        assert "alerts off" not in logs
        assert alert_webhook.token not in logs


def test_a_fallback_the_budget_refuses_alerts_the_budget_and_no_fallback(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    alert_webhook: FakeWebhook,
) -> None:
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {
                "gpu": gpu_block(f"http://127.0.0.1:{closed_port()}"),
                "mock": {"type": "mock", "cost_usd": 1.0},
            },
            "budget": {"backends": {"mock": {"daily_usd": 0.5}}},
            "alerts": alerts_block(),
        }
    )
    assert not run(dagster_instance, config_file).success
    assert [request.json()["alert"] for request in alert_webhook.requests] == [
        {"kind": "event", "key": "budget:budget.backends.mock.daily_usd"}
    ]


def test_a_fallback_the_budget_refuses_is_not_taken_and_the_error_says_so(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {"gpu": gpu_block(down), "mock": {"type": "mock", "cost_usd": 1.0}},
            "budget": {"backends": {"mock": {"daily_usd": 0.5}}},
        }
    )
    result = run(dagster_instance, config_file)
    assert not result.success
    failure = run_step_failure(dagster_instance, result.run_id) or ""
    assert failure.startswith("backend 'gpu' (comfyui): ComfyUI object info VAELoader: cannot")
    assert (
        "; fallback 'mock' not taken: budget.backends.mock.daily_usd = $0.50 per UTC day would "
        "be exceeded"
    ) in failure
    assert rows(migrated_database_url, "SELECT count(*) FROM imagen.images") == [(0,)]
    statuses = rows(migrated_database_url, "SELECT DISTINCT backend_instance FROM mai.imagen_usage")
    assert statuses == [("gpu",)], "only the failed calls of gpu; mock was never called"


def test_a_fallback_whose_call_fails_is_recorded_under_the_fallback(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {
                "gpu": gpu_block(down),
                "mock": {"type": "mock", "fail_permanent": "content policy"},
            },
        }
    )
    result = run(dagster_instance, config_file)
    assert not result.success
    assert rows(
        migrated_database_url,
        "SELECT backend_instance, status, cost_usd, fallback_reason FROM mai.imagen_usage",
    ) == [("mock", "failed", 0, "fell back from gpu: its server is unreachable")], (
        "the failed call is the fallback's, not gpu's"
    )
    assert rows(migrated_database_url, "SELECT count(*) FROM imagen.images") == [(0,)]


def test_no_free_slot_within_fallback_after_s_hands_the_job_to_the_fallback(
    write_config: Callable[..., Path], dagster_instance: dg.DagsterInstance
) -> None:
    with running_fake_comfyui() as box:
        block = gpu_block(box.url, pool_limit=1, fallback_after_s=0.3)
        config_file = write_config(
            {"default_backend": "gpu", "backends": {"gpu": block, "mock": {"type": "mock"}}}
        )
        loaded = parse_setup(
            {"backends": {"gpu": block, "mock": {"type": "mock"}}, "default_backend": "gpu"}
        )
        adapter = loaded.backend("gpu").backend
        (server,) = adapter._servers(logging.getLogger("imagen.test"))  # type: ignore[attr-defined]
        assert isinstance(server, Server)
        held = server.slots.try_take("another run")
        try:
            result = run(dagster_instance, config_file)
        finally:
            assert held is not None
            held.release()
        assert box.submitted() == []
    assert result.success, step_failure_text(result)
    [stored] = result.output_for_node("write_files")
    assert stored.generated.plan.fallback_reason == (
        "fell back from gpu: no queue slot free within 0.3s"
    )
    assert stored.generated.plan.backend == "mock"


@pytest.mark.parametrize(
    ("fallback", "message"),
    [
        (["nope"], r"backends\.gpu\.fallback: 'nope' is not a configured backend; configured"),
        (["gpu"], r"backends\.gpu\.fallback: 'gpu' cannot be its own"),
        ("mock", r"backends\.gpu\.fallback: Input should be a valid list"),
    ],
)
def test_the_fallback_list_is_validated(fallback: Any, message: str) -> None:
    block = {"type": "comfyui", "url": "http://mrock:8188", "fallback": fallback}
    with pytest.raises(ConfigError, match=message):
        parse_setup({"backends": {"gpu": block, "mock": {"type": "mock"}}})


def test_fallback_after_s_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"fallback_after_s: Input should be greater than 0"):
        build_backend("gpu", {"type": "comfyui", "url": "http://mrock:8188", "fallback_after_s": 0})


def test_the_shipped_gpu_pool_example_is_valid() -> None:
    example = REPO_ROOT / "examples" / "imagen.gpu-pool.yaml"
    loaded = parse_setup(yaml.safe_load(example.read_text(encoding="utf-8")), example)
    gpu = loaded.backend("gpu").backend
    assert [server.url for server in gpu.configured_servers()] == [  # type: ignore[attr-defined]
        "http://127.0.0.1:8188",
        "http://127.0.0.1:8189",
    ]
    assert gpu.fallback == ["mock"]

"""The generate_image job end to end on a temporary Dagster instance."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from PIL import Image

from imagen_pipeline.defs.assets import IMAGE
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text
from imagen_pipeline_tests.fixtures.queue import reconstructable_job


def run_config(config_file: Path, **op_config: Any) -> dict[str, Any]:
    return {
        "ops": {"enrich_prompt": {"config": {"prompt": "a lighthouse at dusk", **op_config}}},
        "resources": file_resources(config_file),
    }


def execute(
    instance: dg.DagsterInstance, config_file: Path, **op_config: Any
) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config=run_config(config_file, **op_config), instance=instance, raise_on_error=False
    )


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_only_prompt_needed_image_sidecar_chunks_and_lineage(
    dagster_instance: dg.DagsterInstance, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config_file = write_config()
    result = execute(
        dagster_instance, config_file, style="watercolor", width=320, height=240, seed=11
    )
    assert result.success
    [stored] = result.output_for_node("write_files")
    image_path = Path(stored.image_path)
    assert image_path.parent == tmp_path / "out"
    with Image.open(image_path) as image:
        assert image.size == (320, 240)
        assert image.format == "PNG"
        assert image.text["imagen.prompt"] == "a lighthouse at dusk"
        assert image.text["imagen.enriched_prompt"].startswith("a lighthouse at dusk, watercolour")
        assert image.text["imagen.run_id"] == result.run_id
    sidecar = json.loads(Path(stored.sidecar_path).read_text())
    assert sidecar["dagster"]["run_id"] == result.run_id
    assert sidecar["backend"] == {"instance": "mock", "type": "mock", "options": {}}
    assert sidecar["result"]["seed"] == 11

    event = dagster_instance.get_latest_materialization_event(IMAGE)
    assert event is not None and event.run_id == result.run_id
    metadata = event.asset_materialization.metadata
    assert metadata["path"].value == str(image_path)
    assert metadata["sidecar_path"].value == stored.sidecar_path
    assert metadata["prompt"].value == "a lighthouse at dusk"
    assert metadata["style"].value == "watercolor"
    assert metadata["backend"].value == "mock"
    assert metadata["model"].value == "mock-v1"
    assert metadata["seed"].value == 11
    assert metadata["size"].value == "320x240"
    assert metadata["preview"].value.startswith("![preview](data:image/jpeg;base64,")
    for key in ("enriched_prompt", "steps", "latency_s", "cost_usd"):
        assert key in metadata

    tags = dagster_instance.get_run_by_id(result.run_id).tags
    assert tags["imagen/backend"] == "mock"
    assert tags["imagen/style"] == "watercolor"
    assert tags["imagen/pool"] == "imagen_cloud"


def test_transient_failures_are_retried_into_one_image(
    dagster_instance: dg.DagsterInstance, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    config_file = write_config(
        {
            "backends": {
                "mock": {"type": "mock", "fail_transient_attempts": 2, "calls_log": str(log)}
            }
        }
    )
    result = execute(dagster_instance, config_file)
    assert result.success
    assert [call["attempt"] for call in calls(log)] == [0, 1, 2]
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_permanent_failure_makes_one_attempt_and_fails_with_message(
    dagster_instance: dg.DagsterInstance, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    config_file = write_config(
        {
            "backends": {
                "mock": {"type": "mock", "fail_permanent": "content policy", "calls_log": str(log)}
            }
        }
    )
    result = execute(dagster_instance, config_file)
    assert not result.success
    assert len(calls(log)) == 1
    assert (
        "backend 'mock' (mock): mock backend rejected the request: content policy"
        in step_failure_text(result)
    )
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_bad_style_is_refused_before_a_run_starts(
    dagster_instance: dg.DagsterInstance, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    config_file = write_config({"backends": {"mock": {"type": "mock", "calls_log": str(log)}}})
    with pytest.raises(dg.DagsterInvalidConfigError, match="style not in enum type StyleName"):
        execute(dagster_instance, config_file, style="vaporwave")
    assert calls(log) == []
    assert dagster_instance.get_runs() == [], "refused before a run was created"


def test_reexecute_from_failure_reuses_generated_image(
    dagster_instance: dg.DagsterInstance, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    config_file = write_config(
        {
            "backends": {"mock": {"type": "mock", "calls_log": str(log)}},
            "output": {"directory": str(tmp_path / "out"), "naming": "blocked/{slug}"},
        }
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "blocked").write_text("a file where a folder should be")
    job = reconstructable_job()
    with dg.execute_job(
        job, instance=dagster_instance, run_config=run_config(config_file)
    ) as first:
        assert not first.success
        failed_run_id = first.run_id
    assert len(calls(log)) == 1

    (tmp_path / "out" / "blocked").unlink()
    options = dg.ReexecutionOptions.from_failure(failed_run_id, dagster_instance)
    with dg.execute_job(job, instance=dagster_instance, reexecution_options=options) as second:
        assert second.success
        [stored] = second.output_for_node("write_files")
    assert len(calls(log)) == 1, "re-execution must not call the backend again"
    assert Path(stored.image_path).parent == tmp_path / "out" / "blocked"
    with Image.open(stored.image_path) as image:
        assert image.text["imagen.run_id"] == failed_run_id


def test_transient_failures_stop_after_max_retries(
    dagster_instance: dg.DagsterInstance, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    config_file = write_config(
        {
            "backends": {
                "mock": {"type": "mock", "fail_transient_attempts": 99, "calls_log": str(log)}
            }
        }
    )
    result = execute(dagster_instance, config_file)
    assert not result.success
    assert [call["attempt"] for call in calls(log)] == [0, 1, 2, 3]
    assert "simulated a transient failure" in step_failure_text(result)


def test_the_backends_pool_picks_the_generate_step(
    dagster_instance: dg.DagsterInstance, write_config: Callable[..., Path]
) -> None:
    config_file = write_config(
        {
            "default_backend": "cloudy",
            "backends": {
                "cloudy": {"type": "mock"},
                "gpu_box": {"type": "mock", "pool": "gpu"},
            },
        }
    )
    on_gpu = execute(dagster_instance, config_file, backend="gpu_box", width=64, height=64)
    in_cloud = execute(dagster_instance, config_file, width=64, height=64)
    assert on_gpu.success and in_cloud.success

    def steps(result: dg.ExecuteInProcessResult) -> dict[str, str]:
        return {
            event.step_key: event.event_type_value
            for event in result.all_events
            if event.step_key
            and event.step_key.startswith("generate_")
            and (event.is_step_success or event.is_step_skipped)
        }

    assert steps(on_gpu) == {"generate_gpu": "STEP_SUCCESS", "generate_cloud": "STEP_SKIPPED"}
    assert steps(in_cloud) == {"generate_cloud": "STEP_SUCCESS", "generate_gpu": "STEP_SKIPPED"}


def test_later_steps_follow_the_runs_plan_not_an_edited_config(
    dagster_instance: dg.DagsterInstance, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """imagen.yaml is read once per run, by enrich_prompt: editing it (even removing the
    backend) changes nothing for the steps of a run that planned already."""
    config_file = write_config(
        {"output": {"directory": str(tmp_path / "out"), "naming": "blocked/{slug}"}}
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "blocked").write_text("a file where a folder should be")
    with dg.execute_job(
        reconstructable_job(), instance=dagster_instance, run_config=run_config(config_file)
    ) as first:
        assert not first.success
    write_config(
        {
            "default_backend": "other",
            "backends": {"other": {"type": "mock", "model": "other-v2"}},
            "output": {"directory": str(tmp_path / "elsewhere")},
        }
    )
    (tmp_path / "out" / "blocked").unlink()
    options = dg.ReexecutionOptions.from_failure(first.run_id, dagster_instance)
    with dg.execute_job(
        reconstructable_job(), instance=dagster_instance, reexecution_options=options
    ) as second:
        assert second.success
        [stored] = second.output_for_node("write_files")
    assert Path(stored.image_path).parent == tmp_path / "out" / "blocked"
    assert stored.generated.plan.backend == "mock"
    assert not (tmp_path / "elsewhere").exists()

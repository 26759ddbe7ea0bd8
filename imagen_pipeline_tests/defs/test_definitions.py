"""The code location loads and validates the way `dagster dev` and the daemon load it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from imagen_pipeline.definitions import defs
from imagen_pipeline.defs.assets import ASSET_SPECS
from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT, subprocess_env


def upstream_nodes(job: dg.JobDefinition, node: str) -> set[str]:
    inputs = job.graph.dependency_structure.input_to_upstream_outputs_for_node(node)
    return {output.node_name for outputs in inputs.values() for output in outputs}


def test_definitions_load_with_graph_pools_sensor_and_resources() -> None:
    job = defs().resolve_job_def("generate_image")
    assert sorted(node.name for node in job.graph.nodes) == [
        "cloud_sync",
        "enrich_prompt",
        "generate_cloud",
        "generate_gpu",
        "record_usage",
        "write_files",
    ]
    assert upstream_nodes(job, "generate_gpu") == {"enrich_prompt"}
    assert upstream_nodes(job, "generate_cloud") == {"enrich_prompt"}
    assert upstream_nodes(job, "write_files") == {"generate_gpu", "generate_cloud"}
    assert upstream_nodes(job, "cloud_sync") == {"write_files"}
    assert upstream_nodes(job, "record_usage") == {"write_files", "cloud_sync"}
    assert job.graph.node_named("generate_gpu").definition.pool == "imagen_gpu"
    assert job.graph.node_named("generate_cloud").definition.pool == "imagen_cloud"
    assert {"imagen", "imagen_db", "backends"} <= set(job.resource_defs)
    sensor = defs().resolve_sensor_def("imagen_jobs_sensor")
    assert sensor.minimum_interval_seconds == 1, "every loop of the sensor daemon"


@pytest.mark.parametrize(
    ("database_url", "status"),
    [
        ("postgresql://postgres@127.0.0.1/imagen", dg.DefaultSensorStatus.RUNNING),
        ("", dg.DefaultSensorStatus.STOPPED),
    ],
)
def test_the_sensor_runs_by_default_where_the_code_location_has_a_database(
    monkeypatch: pytest.MonkeyPatch, database_url: str, status: dg.DefaultSensorStatus
) -> None:
    monkeypatch.setenv("IMAGEN_DATABASE_URL", database_url)
    assert defs().resolve_sensor_def("imagen_jobs_sensor").default_status == status


def test_the_asset_graph_leads_from_the_queue_to_the_image_its_objects_and_rows() -> None:
    graph = defs().resolve_asset_graph()
    deps = {
        key.to_user_string(): sorted(dep.to_user_string() for dep in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
    }
    assert deps == {
        "imagen/jobs": [],
        "imagen/image": ["imagen/jobs"],
        "imagen/storage_object": ["imagen/image"],
        "imagen/images": ["imagen/image", "imagen/storage_object"],
        "mai/imagen_usage": ["imagen/image"],
    }
    kinds = {spec.key.to_user_string(): spec.kinds for spec in ASSET_SPECS}
    assert kinds == {
        "imagen/jobs": {"postgres"},
        "imagen/image": {"file"},
        "imagen/storage_object": {"supabase"},
        "imagen/images": {"postgres"},
        "mai/imagen_usage": {"postgres"},
    }
    for spec in ASSET_SPECS:
        assert spec.group_name == "imagen"
        assert spec.owners == ["team:imagen"]
        assert spec.description


def test_launchpad_config_requires_only_prompt() -> None:
    job = defs().resolve_job_def("generate_image")
    fields = job.run_config_schema.config_type.fields["ops"].config_type.fields
    op_fields = fields["enrich_prompt"].config_type.fields["config"].config_type.fields
    required = sorted(name for name, field in op_fields.items() if field.is_required)
    assert required == ["prompt"]
    assert all(field.description for field in op_fields.values())


def test_dagster_definitions_validate_passes() -> None:
    completed = subprocess.run(
        ["dagster", "definitions", "validate", "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr


def test_dg_check_defs_loads_the_project_as_dagsters_project_cli_does() -> None:
    """``[tool.dg]`` in pyproject.toml points dg at the code location (README)."""
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=REPO_ROOT,
        env={**subprocess_env(), "VIRTUAL_ENV": str(Path(sys.executable).parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All definitions loaded successfully." in completed.stdout

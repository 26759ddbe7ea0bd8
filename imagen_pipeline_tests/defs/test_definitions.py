"""The code location loads and validates the way `dagster dev` and the daemon load it."""

from __future__ import annotations

import itertools
import subprocess

from imagen_pipeline.definitions import defs
from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT, subprocess_env


def test_definitions_load_with_job_and_resources() -> None:
    job = defs.resolve_job_def("generate_image")
    order = ["enrich_prompt", "generate", "write_files", "cloud_sync", "record_usage"]
    assert sorted(node.name for node in job.graph.nodes) == sorted(order)
    for upstream, downstream in itertools.pairwise(order):
        inputs = job.graph.dependency_structure.input_to_upstream_outputs_for_node(downstream)
        assert upstream in {out.node_name for outs in inputs.values() for out in outs}
    assert "imagen" in job.resource_defs


def test_launchpad_config_requires_only_prompt() -> None:
    job = defs.resolve_job_def("generate_image")
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

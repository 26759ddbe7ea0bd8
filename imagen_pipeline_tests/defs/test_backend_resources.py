"""Backend instances as Dagster resources: listed with their settings, used by the job,
replaceable in a test through ``resources=``, while an edit of imagen.yaml applies to the
next run without a reload."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from imagen_pipeline.defs.backend_resources import (
    BackendResource,
    backend_resources,
    resource_key,
)
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.generate.setup import load_setup
from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT, subprocess_env

BACKENDS: dict[str, Any] = {
    "default_backend": "mock",
    "backends": {
        "mock": {"type": "mock"},
        "flux-box": {
            "type": "comfyui",
            "workflow": "flux-dev",
            "servers": [
                {"url": "http://127.0.0.1:8188", "label": "mrock", "slots": 2},
                {"url": "http://127.0.0.1:8189", "label": "box2"},
            ],
            "fallback": ["mock"],
        },
        "oai": {"type": "openai", "api_key_env": "OPENAI_API_KEY"},
    },
}


def test_every_instance_is_a_resource_with_its_settings_and_no_secret(
    write_config: Callable[..., Path], monkeypatch: Any
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    loaded = load_setup(write_config(BACKENDS))
    resources = backend_resources(loaded)
    assert sorted(resources) == ["backend_flux_box", "backend_mock", "backend_oai"]
    box = resources["backend_flux_box"]
    assert (box.instance, box.type, box.source) == ("flux-box", "comfyui", loaded.source_label)
    settings = box.settings_dict()
    assert "pool" not in settings, "defaults are left out"
    assert box.backend_instance().backend.pool == "gpu"
    assert [server["url"] for server in settings["servers"]] == [
        "http://127.0.0.1:8188",
        "http://127.0.0.1:8189",
    ]
    assert settings["fallback"] == ["mock"]
    assert resources["backend_oai"].settings_dict()["api_key_env"] == "OPENAI_API_KEY"
    assert all("sk-secret-value" not in r.settings for r in resources.values())
    # The resource rebuilds the adapter it describes.
    assert box.backend_instance().backend.queue_slots() == {
        "http://127.0.0.1:8188": 2,
        "http://127.0.0.1:8189": 2,
    }


def test_resource_keys_are_valid_dagster_keys() -> None:
    assert resource_key("flux-dev.v2") == "backend_flux_dev_v2"
    assert resource_key("mock") == "backend_mock"


def test_the_code_location_lists_the_configured_backends_as_resources_of_the_job(
    write_config: Callable[..., Path],
) -> None:
    config_file = write_config(BACKENDS)
    probe = (
        "import json\n"
        "from imagen_pipeline.definitions import defs\n"
        "repo = defs.get_repository_def()\n"
        "job = defs.resolve_job_def('generate_image')\n"
        "enrich = job.graph.node_named('enrich_prompt').definition\n"
        "resources = repo.get_top_level_resources()\n"
        "print(json.dumps({\n"
        "    'resources': sorted(k for k in resources if k.startswith('backend_')),\n"
        "    'box': defs.resources['backend_flux_box'].instance,\n"
        "    'required': sorted(enrich.required_resource_keys),\n"
        "}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=subprocess_env(IMAGEN_CONFIG=str(config_file)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(completed.stdout)
    assert seen["resources"] == ["backend_flux_box", "backend_mock", "backend_oai"]
    assert seen["box"] == "flux-box"
    assert seen["required"] == ["backend_flux_box", "backend_mock", "backend_oai", "imagen"]


def run_config(config_file: Path, backend: str) -> dict[str, Any]:
    return {
        "ops": {"enrich_prompt": {"config": {"prompt": "a kite", "backend": backend}}},
        "resources": {"imagen": {"config": {"config_path": str(config_file)}}},
    }


def sidecar_of(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [stored] = result.output_for_node("write_files")
    return json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))


def test_a_backend_passed_as_a_resource_is_used_even_over_the_file(
    write_config: Callable[..., Path], dagster_instance: dg.DagsterInstance
) -> None:
    config_file = write_config({"backends": {"mock": {"type": "mock"}}})
    as_loaded = backend_resources(load_setup(config_file))
    job = build_generate_image_job(retry_delay_s=0, backends=as_loaded)
    studio = BackendResource(instance="mock", type="mock", settings='{"model": "studio-v2"}')
    result = job.execute_in_process(
        run_config=run_config(config_file, "mock"),
        instance=dagster_instance,
        resources={"backend_mock": studio},
    )
    assert result.success
    assert sidecar_of(result)["result"]["model"] == "studio-v2"


def test_a_backend_the_file_lacks_can_be_bound_in_code(
    write_config: Callable[..., Path], dagster_instance: dg.DagsterInstance
) -> None:
    config_file = write_config({"backends": {"mock": {"type": "mock"}}})
    extra = BackendResource(instance="sketch", type="mock", settings='{"model": "sketch-v1"}')
    job = build_generate_image_job(retry_delay_s=0, backends={"backend_sketch": extra})
    result = job.execute_in_process(
        run_config=run_config(config_file, "sketch"), instance=dagster_instance
    )
    assert result.success
    sidecar = sidecar_of(result)
    assert (sidecar["backend"]["instance"], sidecar["result"]["model"]) == ("sketch", "sketch-v1")


def test_an_edit_of_imagen_yaml_applies_to_the_next_run_without_a_reload(
    write_config: Callable[..., Path], dagster_instance: dg.DagsterInstance
) -> None:
    config_file = write_config({"backends": {"mock": {"type": "mock", "model": "before"}}})
    job = build_generate_image_job(
        retry_delay_s=0, backends=backend_resources(load_setup(config_file))
    )
    edited = yaml.safe_load(config_file.read_text())
    edited["backends"]["mock"]["model"] = "after"
    config_file.write_text(yaml.safe_dump(edited))
    result = job.execute_in_process(
        run_config=run_config(config_file, "mock"), instance=dagster_instance
    )
    assert result.success
    assert sidecar_of(result)["result"]["model"] == "after"
    messages = [entry.user_message for entry in dagster_instance.all_logs(result.run_id)]
    assert any(
        m.startswith(f"backends changed in {config_file} since the code location loaded: mock;")
        for m in messages
    ), messages


def test_a_run_of_the_file_as_loaded_or_of_another_file_reports_no_change(
    write_config: Callable[..., Path], dagster_instance: dg.DagsterInstance
) -> None:
    loaded_file = write_config({"backends": {"mock": {"type": "mock"}}})
    other_file = write_config({"backends": {"mock": {"type": "mock", "model": "x"}}}, "b.yaml")
    job = build_generate_image_job(
        retry_delay_s=0, backends=backend_resources(load_setup(loaded_file))
    )
    for config_file in (loaded_file, other_file):
        result = job.execute_in_process(
            run_config=run_config(config_file, "mock"), instance=dagster_instance
        )
        assert result.success
        messages = [entry.user_message for entry in dagster_instance.all_logs(result.run_id)]
        assert not any(m.startswith("backends changed") for m in messages)

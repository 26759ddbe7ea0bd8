"""The ``imagen`` and ``backends`` resources: bound from imagen.yaml when the code location
loads, listed with every instance's settings (never a secret), used by the run, replaceable
in a test or a launchpad run through Dagster's own resources; the job the same whatever the
file holds, and no file read at import."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.snap import JobSnap

from imagen_pipeline.definitions import defs
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.resources import BackendsResource, load_resources
from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT, file_resources, subprocess_env

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


def load_definitions(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    """The code location as it loads with ``$IMAGEN_CONFIG`` pointing at ``config_file``."""
    monkeypatch.setenv("IMAGEN_CONFIG", str(config_file))
    return defs()


def run_probe(code: str, config_file: Path) -> Any:
    """Run ``code`` in a fresh interpreter with ``$IMAGEN_CONFIG`` set; its JSON output."""
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=subprocess_env(IMAGEN_CONFIG=str(config_file)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout)


def test_every_instance_is_listed_with_its_typed_settings_and_no_secret(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    backends = load_definitions(write_config(BACKENDS), monkeypatch).resources["backends"]
    assert sorted(backends.comfyui) == ["flux-box"]
    assert sorted(backends.openai) == ["oai"] and sorted(backends.mock) == ["mock"]
    box = backends.comfyui["flux-box"]
    assert (box.pool, box.workflow, box.fallback) == ("gpu", "flux-dev", ["mock"])
    assert [server.url for server in box.servers] == [
        "http://127.0.0.1:8188",
        "http://127.0.0.1:8189",
    ]
    assert backends.openai["oai"].api_key_env == "OPENAI_API_KEY"
    assert "sk-secret-value" not in json.dumps(backends.model_dump(mode="json"))
    assert backends.backends()["flux-box"].backend.queue_slots() == {
        "http://127.0.0.1:8188": 2,
        "http://127.0.0.1:8189": 2,
    }
    assert "comfyui instances by name" in (type(backends).model_fields["comfyui"].description or "")
    assert type(box).model_fields["pool_limit"].description == (
        "Prompts this pipeline keeps in the server's queue at once, across all runs on this "
        "machine (2: one on the GPU, one waiting)."
    )


def test_the_resources_page_of_a_loaded_code_location_lists_the_instances(
    write_config: Callable[..., Path],
) -> None:
    """What the webserver gets: the repository's top-level resources, in a fresh process."""
    seen = run_probe(
        "import json\n"
        "from imagen_pipeline.definitions import defs\n"
        "repo = defs().get_repository_def()\n"
        "shown = repo.get_top_level_resources()['backends'].config_schema.as_field()\n"
        "enrich = repo.get_job('generate_image').graph.node_named('enrich_prompt').definition\n"
        "print(json.dumps({'comfyui': shown.default_value['comfyui'],\n"
        "                  'openai': sorted(shown.default_value['openai']),\n"
        "                  'required': sorted(enrich.required_resource_keys)}))\n",
        write_config(BACKENDS),
    )
    assert sorted(seen["comfyui"]) == ["flux-box"] and seen["openai"] == ["oai"]
    assert seen["comfyui"]["flux-box"]["servers"][0] == {
        "url": "http://127.0.0.1:8188",
        "label": "mrock",
        "slots": 2,
    }
    assert seen["required"] == ["backends", "imagen"]


def structure(job: dg.JobDefinition) -> dict[str, Any]:
    """What makes a job the same job: its graph and ops, the config schema of its ops, the
    keys and config types of its resources (their values are the settings bound)."""
    snap = JobSnap.from_job_def(job)
    return {
        "graph": snap.dep_structure_snapshot,
        "ops": snap.node_defs_snapshot,
        "op_config": {
            node.name: node.definition.config_schema.as_field().config_type.key
            for node in job.graph.nodes
            if node.definition.config_schema is not None
        },
        "resources": {
            key: definition.config_schema.as_field().config_type.key
            for key, definition in job.resource_defs.items()
        },
        "required": sorted(
            {key for node in job.graph.nodes for key in node.definition.required_resource_keys}
        ),
    }


def test_the_job_is_the_same_whatever_imagen_yaml_holds(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    one_file = write_config(BACKENDS, "one.yaml")
    one = load_definitions(one_file, monkeypatch)
    other_file = write_config(
        {"default_backend": "solo", "backends": {"solo": {"type": "mock", "pool": "gpu"}}},
        "other.yaml",
    )
    other = load_definitions(other_file, monkeypatch)
    jobs = [found.resolve_job_def("generate_image") for found in (one, other)]
    assert structure(jobs[0]) == structure(jobs[1])
    assert structure(jobs[0])["required"] == ["backends", "imagen", "imagen_db"]
    as_built = []
    for config_file in (one_file, other_file):
        monkeypatch.setenv("IMAGEN_CONFIG", str(config_file))
        as_built.append(JobSnap.from_job_def(build_generate_image_job()).snapshot_id)
    assert as_built[0] == as_built[1], "the job as defined in code depends on no file"
    sensors = [found.resolve_sensor_def("imagen_jobs_sensor") for found in (one, other)]
    assert sensors[0].required_resource_keys == sensors[1].required_resource_keys


def test_importing_the_code_location_reads_no_file_and_no_environment(
    write_config: Callable[..., Path],
) -> None:
    """An audit hook in a fresh interpreter: importing the definitions module opens no
    imagen.yaml and reads none of the pipeline's environment variables; loading it reads the
    file once."""
    seen = run_probe(
        "import json, os, sys\n"
        "opened, read = [], []\n"
        "def hook(event, args):\n"
        "    if event == 'open' and str(args[0]).endswith('imagen.yaml'):\n"
        "        opened.append(str(args[0]))\n"
        "sys.addaudithook(hook)\n"
        "class Watched(dict):\n"
        "    def get(self, key, default=None):\n"
        "        if key.startswith('IMAGEN_'):\n"
        "            read.append(key)\n"
        "        return super().get(key, default)\n"
        "    def __getitem__(self, key):\n"
        "        if key.startswith('IMAGEN_'):\n"
        "            read.append(key)\n"
        "        return super().__getitem__(key)\n"
        "os.environ = Watched(os.environ)\n"
        "import imagen_pipeline.definitions as definitions\n"
        "at_import = {'opened': list(opened), 'read': list(read)}\n"
        "definitions.defs()\n"
        "print(json.dumps({'import': at_import, 'load_opened': len(opened)}))\n",
        write_config(BACKENDS),
    )
    assert seen == {"import": {"opened": [], "read": []}, "load_opened": 1}


def run_config(config_file: Path, backend: str) -> dict[str, Any]:
    return {
        "ops": {"enrich_prompt": {"config": {"prompt": "a kite", "backend": backend}}},
        "resources": file_resources(config_file),
    }


def sidecar_of(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [stored] = result.output_for_node("write_files")
    return json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))


def test_a_test_binds_its_own_backends_through_dagsters_resources(
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_file = write_config({"backends": {"mock": {"type": "mock"}}})
    resources = load_definitions(config_file, monkeypatch).resources
    studio = BackendsResource(mock={"mock": {"model": "studio-v2"}, "sketch": {"model": "s1"}})
    for backend, model in (("mock", "studio-v2"), ("sketch", "s1")):
        result = build_generate_image_job(retry_delay_s=0).execute_in_process(
            run_config={
                "ops": {"enrich_prompt": {"config": {"prompt": "a kite", "backend": backend}}}
            },
            instance=dagster_instance,
            resources={**resources, "backends": studio},
        )
        assert result.success
        sidecar = sidecar_of(result)
        assert (sidecar["backend"]["instance"], sidecar["result"]["model"]) == (backend, model)


def test_a_launchpad_run_overrides_a_setting_for_itself(
    write_config: Callable[..., Path], dagster_instance: dg.DagsterInstance
) -> None:
    config_file = write_config({"backends": {"mock": {"type": "mock", "model": "file-model"}}})
    config = run_config(config_file, "mock")
    config["resources"]["backends"]["config"]["mock"]["mock"]["model"] = "launchpad-model"
    result = build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config=config, instance=dagster_instance
    )
    assert result.success
    assert sidecar_of(result)["result"]["model"] == "launchpad-model"


def test_an_edit_of_imagen_yaml_applies_to_the_next_load_without_a_restart(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's process loads the code location when it starts (a new process per run, or
    an ``imagen worker`` that reloads it when the file changed): it sees the file as is."""
    config_file = write_config({"backends": {"mock": {"type": "mock", "model": "before"}}})
    before = load_definitions(config_file, monkeypatch).resources["backends"]
    edited = yaml.safe_load(config_file.read_text())
    edited["backends"]["mock"]["model"] = "after"
    config_file.write_text(yaml.safe_dump(edited))
    after = load_definitions(config_file, monkeypatch).resources["backends"]
    assert (before.mock["mock"].model, after.mock["mock"].model) == ("before", "after")


def test_a_file_that_does_not_load_still_loads_the_code_location_and_fails_each_run(
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_file = write_config({"backends": {"mock": {"type": "dalle9"}}})
    definitions = load_definitions(config_file, monkeypatch)
    assert definitions.resources["backends"].backends().names() == []
    result = build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={"ops": {"enrich_prompt": {"config": {"prompt": "a kite"}}}},
        instance=dagster_instance,
        resources=load_resources(str(config_file)),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert failure.step_failure_data is not None
    assert "backends.mock.type: unknown backend type 'dalle9'" in (
        failure.step_failure_data.error.message if failure.step_failure_data.error else ""
    )

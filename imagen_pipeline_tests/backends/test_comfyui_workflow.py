"""ComfyUI workflows: built-in templates, mappings and the config errors they produce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imagen_pipeline.backends.comfyui.templates import TEMPLATES
from imagen_pipeline.backends.comfyui.workflow import (
    REQUEST_FIELDS,
    Target,
    is_link,
    load_workflow,
)
from imagen_pipeline.backends.registry import build_backend
from imagen_pipeline.errors import ConfigError
from imagen_pipeline_tests.fakes.comfyui_server import CLASSIC_WORKFLOW

URL = "http://mrock:8188"


def comfyui_block(**fields: Any) -> dict[str, Any]:
    return {"type": "comfyui", "url": URL, **fields}


def config_error(block: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        build_backend("gpu", block)
    return str(raised.value)


def write_workflow(tmp_path: Path, graph: Any, name: str = "workflow.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(graph), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_builtin_template_loads_and_maps_to_value_inputs(name: str) -> None:
    template = TEMPLATES[name]
    workflow = load_workflow(name, {}, {})
    assert set(workflow.inputs) == set(template.inputs)
    assert set(workflow.inputs) <= set(REQUEST_FIELDS)
    for request_field, targets in workflow.inputs.items():
        for target in targets:
            value = workflow.graph[target.node_id]["inputs"][target.input_name]
            assert not is_link(value), f"{name}: {request_field} -> {target} is a link"
            assert isinstance(value, REQUEST_FIELDS[request_field])
    for node in workflow.graph.values():
        for value in node["inputs"].values():
            if is_link(value):
                assert value[0] in workflow.graph
    classes = {node["class_type"] for node in workflow.graph.values()}
    assert "SaveImage" in classes
    assert workflow.output_node_ids() == ["9"]
    assert workflow.model_file() in {
        "flux1-dev.safetensors",
        "flux1-schnell.safetensors",
        "flux1-dev-fp8.safetensors",
    }


def test_flux_dev_template_is_the_split_file_sampler_custom_advanced_graph() -> None:
    workflow = load_workflow("flux-dev", {}, {})
    classes = sorted(node["class_type"] for node in workflow.graph.values())
    assert classes == sorted(
        [
            "CLIPTextEncode",
            "VAEDecode",
            "SaveImage",
            "VAELoader",
            "DualCLIPLoader",
            "UNETLoader",
            "SamplerCustomAdvanced",
            "KSamplerSelect",
            "BasicScheduler",
            "BasicGuider",
            "RandomNoise",
            "FluxGuidance",
            "EmptySD3LatentImage",
            "ModelSamplingFlux",
        ]
    )
    assert workflow.inputs["width"] == (Target("27", "width"), Target("30", "width"))
    files = [(f.node_id, f.input_name, f.filename) for f in workflow.model_files()]
    assert files == [
        ("10", "vae_name", "ae.safetensors"),
        ("11", "clip_name1", "t5xxl_fp8_e4m3fn.safetensors"),
        ("11", "clip_name2", "clip_l.safetensors"),
        ("12", "unet_name", "flux1-dev.safetensors"),
    ]


def test_flux_fp8_template_is_a_single_checkpoint_with_ksampler() -> None:
    workflow = load_workflow("flux-fp8", {}, {})
    classes = {node["class_type"] for node in workflow.graph.values()}
    assert {"CheckpointLoaderSimple", "KSampler"} <= classes
    assert "UNETLoader" not in classes
    assert workflow.model_file() == "flux1-dev-fp8.safetensors"


def test_config_block_builds_with_gpu_pool_and_model_from_the_loader() -> None:
    instance = build_backend("gpu", comfyui_block(workflow="flux-schnell", url=URL + "/"))
    backend = instance.backend
    assert (instance.type_name, backend.pool, backend.pool_limit) == ("comfyui", "gpu", 2)
    assert backend.url == URL
    assert backend.model_name() == "flux1-schnell.safetensors"
    assert instance.credential_env_vars() == {}


def test_overrides_change_the_model_file_reported_and_checked() -> None:
    backend = build_backend(
        "gpu", comfyui_block(overrides={"12.unet_name": "flux1-dev-Q8.safetensors"})
    ).backend
    assert backend.model_name() == "flux1-dev-Q8.safetensors"


def test_user_file_with_its_own_mapping(tmp_path: Path) -> None:
    path = write_workflow(tmp_path, CLASSIC_WORKFLOW)
    backend = build_backend(
        "gpu",
        comfyui_block(
            workflow=path,
            inputs={
                "prompt": "6.text",
                "negative": "7.text",
                "seed": "3.seed",
                "width": "5.width",
                "height": "5.height",
                "steps": "3.steps",
            },
        ),
    ).backend
    workflow = backend.load()
    assert workflow.inputs["negative"] == (Target("7", "text"),)
    assert "filename_prefix" not in workflow.inputs
    assert backend.model_name() == "flux1-dev-fp8.safetensors"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"inputs": {"seed": "25.seed"}},
            "backends.gpu.inputs.seed: node 25 (RandomNoise) has no input 'seed'; "
            "its inputs: noise_seed (got '25.seed')",
            id="missing-input",
        ),
        pytest.param(
            {"inputs": {"prompt": "60.text"}},
            "backends.gpu.inputs.prompt: no node '60' in the workflow; its nodes: "
            "6 (CLIPTextEncode), 8 (VAEDecode), 9 (SaveImage), 10 (VAELoader)",
            id="missing-node",
        ),
        pytest.param(
            {"inputs": {"negative": "26.conditioning"}},
            "backends.gpu.inputs.negative: node 26 (FluxGuidance) input 'conditioning' is "
            "linked from node 6; map an input that holds a value",
            id="linked-input",
        ),
        pytest.param(
            {"inputs": {"width": "6.text"}},
            "backends.gpu.inputs.width: node 6 (CLIPTextEncode) input 'text' holds "
            "'a photo of a lighthouse at dusk', but width is a number",
            id="wrong-type",
        ),
        pytest.param(
            {"inputs": {"cfg": "31.cfg"}},
            "backends.gpu.inputs.cfg: not a request field; mappable fields: prompt, negative, "
            "seed, width, height, steps, guidance, strength, image, filename_prefix",
            id="unknown-field",
        ),
        pytest.param(
            {"inputs": {"seed": "noise_seed"}},
            "backends.gpu.inputs.seed: expected '<node id>.<input name>' such as '6.text'",
            id="not-a-target",
        ),
        pytest.param(
            {"inputs": {"prompt": None}},
            "backends.gpu.inputs.prompt: the prompt must be mapped to a text input",
            id="prompt-unmapped",
        ),
        pytest.param(
            {"overrides": {"12.unet": "x.safetensors"}},
            "backends.gpu.overrides.12.unet: node 12 (UNETLoader) has no input 'unet'; its "
            "inputs: unet_name, weight_dtype",
            id="override-input",
        ),
        pytest.param(
            {"overrides": {"17.steps": [1, 2]}},
            "backends.gpu.overrides.17.steps: must be a text, number or true/false value",
            id="override-value",
        ),
        pytest.param(
            {"workflow": "flux-pro"},
            "backends.gpu.workflow: unknown built-in workflow; built-in: flux-dev, "
            "flux-dev-img2img, flux-fp8, flux-schnell; or the absolute path",
            id="unknown-template",
        ),
        pytest.param(
            {"workflow": "workflows/flux.json"},
            "backends.gpu.workflow: a workflow file must be given as an absolute path",
            id="relative-path",
        ),
        pytest.param(
            {"url": "mrock:8188"},
            "backends.gpu.url: Value error, must be an http(s) URL such as http://mrock:8188",
            id="url",
        ),
        pytest.param(
            {"pool_limit": 0},
            "backends.gpu.pool_limit: Input should be greater than or equal to 1",
            id="pool-limit",
        ),
    ],
)
def test_bad_settings_name_the_key_path_and_what_exists(
    fields: dict[str, Any], expected: str
) -> None:
    assert expected in config_error(comfyui_block(**fields))


def test_every_problem_of_a_mapping_is_reported_at_once() -> None:
    message = config_error(
        comfyui_block(inputs={"seed": "25.seed", "steps": "99.steps"}, overrides={"1.x": 2})
    )
    lines = message.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "backends.gpu.overrides.1.x",
        "backends.gpu.inputs.seed",
        "backends.gpu.inputs.steps",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            {"nodes": [], "links": [], "version": 0.4},
            "backends.gpu.workflow: this is a UI workflow (it has 'nodes' and 'links'); save it "
            "from ComfyUI with Workflow > Export (API) instead",
            id="ui-format",
        ),
        pytest.param(
            "{not json",
            "backends.gpu.workflow: {path} is not valid JSON",
            id="not-json",
        ),
        pytest.param(
            {"3": {"inputs": {}}},
            "backends.gpu.workflow: node '3' needs a 'class_type' and an 'inputs' map",
            id="no-class-type",
        ),
        pytest.param(
            {"6": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["4", 1]}}},
            "backends.gpu.workflow: node 6 (CLIPTextEncode) input 'clip' is linked from node "
            "'4', which is not in the workflow",
            id="dangling-link",
        ),
        pytest.param(
            CLASSIC_WORKFLOW,
            "backends.gpu.inputs.prompt: the prompt must be mapped to a text input",
            id="file-without-mapping",
        ),
    ],
)
def test_bad_workflow_files_are_refused_when_the_config_loads(
    tmp_path: Path, content: Any, expected: str
) -> None:
    path = tmp_path / "flow.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    message = config_error(comfyui_block(workflow=str(path)))
    assert expected.replace("{path}", str(path)) in message


def test_missing_workflow_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    message = config_error(comfyui_block(workflow=str(missing)))
    assert f"backends.gpu.workflow: cannot read {missing}: No such file or directory" in message


def test_a_workflow_file_changed_after_loading_fails_as_a_config_error(tmp_path: Path) -> None:
    path = write_workflow(tmp_path, CLASSIC_WORKFLOW)
    backend = build_backend("gpu", comfyui_block(workflow=path, inputs={"prompt": "6.text"}))
    Path(path).write_text(json.dumps({"6": CLASSIC_WORKFLOW["7"]}), "utf-8")
    with pytest.raises(ConfigError, match="linked from node '4', which is not in the workflow"):
        backend.backend.load()

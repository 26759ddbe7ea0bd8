"""What imagen.yaml may say about options, checked when the file loads: no ``client_options``
entry offers an input that reads a file or fetches a URL, or one a request field sets, no
choice names a URL or a file, and no ComfyUI ``overrides`` entry sets a mapped request field
or the image count. Each refusal names the key path of the entry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagen_pipeline.backends.comfyui.workflow import load_workflow
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.generate.setup import load_setup

FILE_REASON = "takes an image, a file or a URL; clients cannot set it"
COUNT_REASON = "sets how many images one prompt makes, which only the request's count field may set"
FLUX_DEV_INPUTS = {
    "prompt": "6.text",
    "seed": "25.noise_seed",
    "width": ["27.width", "30.width"],
    "height": ["27.height", "30.height"],
    "steps": "17.steps",
    "guidance": "26.guidance",
    "filename_prefix": "9.filename_prefix",
}
"""flux-dev's own mapping, for a workflow file built from it."""


def comfyui(**fields: Any) -> dict[str, Any]:
    return {"type": "comfyui", "url": "http://127.0.0.1:8188", **fields}


def replicate(**fields: Any) -> dict[str, Any]:
    return {
        "type": "replicate",
        "model": "black-forest-labs/flux-dev",
        "api_token_env": "IMAGEN_TEST_REPLICATE_TOKEN",
        **fields,
    }


def openai(**fields: Any) -> dict[str, Any]:
    return {"type": "openai", "api_key_env": "IMAGEN_TEST_OPENAI_KEY", **fields}


@pytest.fixture
def extended_workflow(tmp_path: Path) -> str:
    """flux-dev with three nodes the templates lack: a loader whose input is not named like
    a file but holds one, a RepeatLatentBatch (its ``amount`` multiplies the images) and a
    LoadImage the request's source does not go to."""
    graph = load_workflow("flux-dev", {}, {}).graph
    graph["50"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-Ultra.pth"}}
    graph["51"] = {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["27", 0], "amount": 1}}
    graph["52"] = {"class_type": "LoadImage", "inputs": {"image": "example.png"}}
    path = tmp_path / "extended_api.json"
    path.write_text(json.dumps(graph), encoding="utf-8")
    return str(path)


def load_error(write_config: Callable[..., Path], block: dict[str, Any]) -> str:
    """The error of loading an imagen.yaml whose only backend ``gpu`` is ``block``."""
    config_file = write_config({"default_backend": "gpu", "backends": {"gpu": block}})
    with pytest.raises(ConfigError) as raised:
        load_setup(str(config_file))
    message = str(raised.value)
    assert message.startswith(f"{config_file}: backends.gpu."), message
    return message


@pytest.mark.parametrize(
    ("block", "key", "reason"),
    [
        pytest.param(
            comfyui(client_options={"12.unet_name": {"choices": ["flux1-dev"]}}),
            "12.unet_name",
            FILE_REASON,
            id="comfyui-unet-loader",
        ),
        pytest.param(
            comfyui(client_options={"11.clip_name1": {"choices": ["clip_l"]}}),
            "11.clip_name1",
            FILE_REASON,
            id="comfyui-clip-loader",
        ),
        pytest.param(
            comfyui(client_options={"10.vae_name": {"choices": ["ae"]}}),
            "10.vae_name",
            FILE_REASON,
            id="comfyui-vae-loader",
        ),
        pytest.param(
            comfyui(
                workflow="flux-dev-img2img",
                client_options={"40.image": {"choices": ["cat"]}},
            ),
            "40.image",
            "sets the source image, which only the request's source_images field may set",
            id="comfyui-mapped-load-image",
        ),
        pytest.param(
            comfyui(
                workflow="flux-dev-img2img",
                inputs={"image": None, "strength": None},
                client_options={"40.image": {"choices": ["cat"]}},
            ),
            "40.image",
            FILE_REASON,
            id="comfyui-unmapped-load-image",
        ),
        pytest.param(
            comfyui(client_options={"27.width": {"min": 64, "max": 512, "type": "integer"}}),
            "27.width",
            "sets width, which only the request's width field may set",
            id="comfyui-width-by-node-path",
        ),
        pytest.param(
            comfyui(client_options={"27.batch_size": {"min": 1, "max": 4, "type": "integer"}}),
            "27.batch_size",
            COUNT_REASON,
            id="comfyui-batch-size",
        ),
        pytest.param(
            comfyui(client_options={"17.steps": {"min": 1, "max": 30, "type": "integer"}}),
            "17.steps",
            "sets steps, which only the request's steps field may set",
            id="comfyui-steps-by-node-path",
        ),
        pytest.param(
            comfyui(client_options={"25.noise_seed": {"min": 0, "max": 9}}),
            "25.noise_seed",
            "sets seed, which only the request's seed field may set",
            id="comfyui-seed-by-node-path",
        ),
        pytest.param(
            comfyui(client_options={"9.filename_prefix": {"choices": ["x"]}}),
            "9.filename_prefix",
            "sets the output file name, which only the pipeline sets",
            id="comfyui-output-name",
        ),
        pytest.param(
            comfyui(client_options={"width": {"min": 64, "max": 512}}),
            "width",
            "sets width, which only the request's width field may set",
            id="comfyui-width-by-name",
        ),
        pytest.param(
            replicate(client_options={"image": {"choices": ["cat"]}}),
            "image",
            FILE_REASON,
            id="replicate-image",
        ),
        pytest.param(
            replicate(client_options={"lora_weights": {"choices": ["owner-lora"]}}),
            "lora_weights",
            FILE_REASON,
            id="replicate-lora-weights",
        ),
        pytest.param(
            replicate(client_options={"hf_lora": {"choices": ["owner-lora"]}}),
            "hf_lora",
            FILE_REASON,
            id="replicate-hf-lora",
        ),
        pytest.param(
            replicate(client_options={"style_image_url": {"choices": ["cat"]}}),
            "style_image_url",
            FILE_REASON,
            id="replicate-url-input",
        ),
        pytest.param(
            replicate(client_options={"mask": {"choices": ["circle"]}}),
            "mask",
            FILE_REASON,
            id="replicate-mask",
        ),
        pytest.param(
            replicate(client_options={"num_outputs": {"min": 1, "max": 4, "type": "integer"}}),
            "num_outputs",
            "sets how many images one prediction makes, which only the request's count field "
            "may set",
            id="replicate-num-outputs",
        ),
        pytest.param(
            replicate(client_options={"num_inference_steps": {"min": 1, "max": 50}}),
            "num_inference_steps",
            "sets steps, which only the request's steps field may set",
            id="replicate-steps",
        ),
        pytest.param(
            replicate(client_options={"input_images": {"choices": ["cat"]}}),
            "input_images",
            "sets the source images, which only the request's source_images field may set",
            id="replicate-input-images",
        ),
        pytest.param(
            openai(client_options={"n": {"min": 1, "max": 4, "type": "integer"}}),
            "n",
            "sets how many images one call makes, which only the request's count field may set",
            id="openai-n",
        ),
        pytest.param(
            openai(client_options={"size": {"choices": ["1024x1024"]}}),
            "size",
            "sets the image size, which only the request's width and height fields may set",
            id="openai-size",
        ),
        pytest.param(
            openai(client_options={"image": {"choices": ["cat"]}}),
            "image",
            FILE_REASON,
            id="openai-image",
        ),
    ],
)
def test_a_client_option_for_a_file_input_or_a_request_field_is_refused_when_the_config_loads(
    write_config: Callable[..., Path], block: dict[str, Any], key: str, reason: str
) -> None:
    message = load_error(write_config, block)
    assert message.endswith(f"backends.gpu.client_options.{key}: {reason}"), message


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        pytest.param("50.model_name", FILE_REASON, id="input-holding-a-file-name"),
        pytest.param("51.amount", COUNT_REASON, id="repeat-latent-batch-amount"),
        pytest.param("52.image", FILE_REASON, id="load-image-not-the-source"),
    ],
)
def test_a_workflow_files_own_file_and_count_inputs_cannot_be_offered_to_clients(
    write_config: Callable[..., Path], extended_workflow: str, key: str, reason: str
) -> None:
    block = comfyui(
        workflow=extended_workflow,
        inputs=FLUX_DEV_INPUTS,
        client_options={key: {"choices": ["x"]} if reason == FILE_REASON else {"min": 1, "max": 2}},
    )
    message = load_error(write_config, block)
    assert message.endswith(f"backends.gpu.client_options.{key}: {reason}"), message


@pytest.mark.parametrize(
    "choice",
    [
        pytest.param("https://evil.example/style.png", id="https-url"),
        pytest.param("http://169.254.169.254/latest/meta-data", id="metadata-url"),
        pytest.param("file:///etc/passwd", id="file-url"),
        pytest.param("data:image/png;base64,iVBORw0KGgo=", id="data-uri"),
        pytest.param("../models/other", id="relative-path"),
        pytest.param("/etc/passwd", id="absolute-path"),
        pytest.param("~/secrets", id="home-path"),
        pytest.param("C:\\models\\x", id="windows-path"),
        pytest.param("flux1-schnell.safetensors", id="safetensors-name"),
        pytest.param("lora.ckpt", id="ckpt-name"),
        pytest.param("cat.PNG", id="image-name"),
    ],
)
@pytest.mark.parametrize(
    ("make_block", "key"),
    [
        pytest.param(comfyui, "17.scheduler", id="comfyui"),
        pytest.param(replicate, "style", id="replicate"),
        pytest.param(openai, "background", id="openai"),
    ],
)
def test_a_choice_naming_a_url_or_a_file_is_refused_when_the_config_loads(
    write_config: Callable[..., Path],
    make_block: Callable[..., dict[str, Any]],
    key: str,
    choice: str,
) -> None:
    block = make_block(client_options={key: {"choices": ["plain", choice]}})
    message = load_error(write_config, block)
    assert f"backends.gpu.client_options.{key}: " in message
    assert f"choices: {choice!r} names a URL or a file; a client option never does" in message


def test_plain_choices_and_bounds_load(write_config: Callable[..., Path]) -> None:
    """The counterpart of the refusals: entries for inputs that fetch nothing load, and
    clients are offered exactly them."""
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {
                "gpu": comfyui(
                    client_options={
                        "guidance": {"min": 1, "max": 10},
                        "17.scheduler": {"choices": ["simple", "karras"]},
                        "16.sampler_name": {"choices": ["euler", "heun"]},
                    }
                ),
                "cloud": replicate(client_options={"go_fast": {"choices": [True, False]}}),
            },
        }
    )
    setup = load_setup(str(config_file))
    rules = setup.backends["gpu"].backend.client_option_rules()
    assert sorted(rules) == ["16.sampler_name", "17.scheduler", "guidance"]
    assert rules["17.scheduler"].choices == ["simple", "karras"]
    assert list(setup.backends["cloud"].backend.client_option_rules()) == ["go_fast"]


# -- ComfyUI overrides -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "key", "value", "reason"),
    [
        pytest.param({}, "27.batch_size", 4, COUNT_REASON, id="batch-size"),
        pytest.param(
            {},
            "27.width",
            2048,
            "sets width, which only the request's width field may set",
            id="width",
        ),
        pytest.param(
            {},
            "30.height",
            2048,
            "sets height, which only the request's height field may set",
            id="height-second-target",
        ),
        pytest.param(
            {},
            "17.steps",
            50,
            "sets steps, which only the request's steps field may set",
            id="steps",
        ),
        pytest.param(
            {},
            "25.noise_seed",
            1,
            "sets seed, which only the request's seed field may set",
            id="seed",
        ),
        pytest.param(
            {},
            "6.text",
            "a cat",
            "sets prompt, which only the request's prompt field may set",
            id="prompt",
        ),
        pytest.param(
            {},
            "26.guidance",
            5,
            "sets guidance, which only the guidance option or the instance's guidance setting "
            "may set",
            id="guidance",
        ),
        pytest.param(
            {},
            "9.filename_prefix",
            "mine",
            "sets the output file name, which only the pipeline sets",
            id="output-name",
        ),
        pytest.param(
            {"workflow": "flux-dev-img2img"},
            "40.image",
            "cat.png",
            "sets the source image, which only the request's source_images field may set",
            id="source-image",
        ),
        pytest.param(
            {"workflow": "flux-dev-img2img"},
            "31.denoise",
            0.5,
            "sets strength, which only the request's strength field may set",
            id="strength",
        ),
    ],
)
def test_an_override_that_sets_a_request_field_or_the_count_is_refused_when_the_config_loads(
    write_config: Callable[..., Path], fields: dict[str, Any], key: str, value: Any, reason: str
) -> None:
    """Issue 24: no option sets what a request field sets, for anyone; the operator's fixed
    ``overrides`` are held to the same rule as a client's option, and the error points at the
    field."""
    message = load_error(write_config, comfyui(overrides={key: value}, **fields))
    assert f"backends.gpu.overrides.{key}: {reason}" in message, message


def test_an_override_of_repeat_latent_batch_amount_is_refused(
    write_config: Callable[..., Path], extended_workflow: str
) -> None:
    block = comfyui(workflow=extended_workflow, inputs=FLUX_DEV_INPUTS, overrides={"51.amount": 4})
    message = load_error(write_config, block)
    assert f"backends.gpu.overrides.51.amount: {COUNT_REASON}" in message, message


def test_every_refused_override_is_named_at_once(write_config: Callable[..., Path]) -> None:
    message = load_error(
        write_config, comfyui(overrides={"27.batch_size": 4, "17.scheduler": "beta", "27.width": 8})
    )
    lines = message.split(": ", 1)[1].splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "backends.gpu.overrides.27.batch_size",
        "backends.gpu.overrides.27.width",
    ]


def test_overrides_of_unmapped_inputs_load_and_an_unmapped_field_may_be_fixed(
    write_config: Callable[..., Path],
) -> None:
    """An override of an input no request field reaches loads; to fix the steps, the
    operator unmaps ``steps`` and overrides its input (a request's steps are then ignored)."""
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {
                "gpu": comfyui(
                    inputs={"steps": None},
                    overrides={
                        "17.steps": 30,
                        "17.scheduler": "beta",
                        "12.unet_name": "flux1-dev-fp8-e4m3fn.safetensors",
                    },
                )
            },
        }
    )
    workflow = load_setup(str(config_file)).backends["gpu"].backend.load()
    assert "steps" not in workflow.inputs
    assert workflow.graph["17"]["inputs"]["steps"] == 30
    assert workflow.graph["17"]["inputs"]["scheduler"] == "beta"
    assert workflow.model_file() == "flux1-dev-fp8-e4m3fn.safetensors"

"""The sample ``imagen.yaml`` (`imagen config sample`): it loads as printed, and every
commented-out block in it loads too once uncommented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from imagen_pipeline.backends.comfyui.backend import ComfyUIBackend
from imagen_pipeline.backends.mock import MockBackend
from imagen_pipeline.backends.openai.backend import OpenAIImagesBackend
from imagen_pipeline.backends.replicate.backend import ReplicateBackend
from imagen_pipeline.cli.config_cmd import sample_config_text
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.generate.setup import Setup, load_setup
from imagen_pipeline_tests.fakes.comfyui_server import CLASSIC_WORKFLOW

COMMENT = re.compile(r"^(?P<indent>\s*)# ?(?P<text>.*)$")
YAML_KEY = re.compile(r"^[a-z_][a-z0-9_]*:(\s|$)")
"""A commented line that starts a YAML block: a lowercase key (prose starts otherwise)."""


def uncomment_blocks(text: str) -> tuple[str, list[str]]:
    """``text`` with every commented-out YAML block uncommented, and the first key of each.

    In a run of comment lines, prose comes first; the block starts at the first line whose
    text (after ``# ``) is a lowercase ``key:``, and every comment line after it up to the
    next blank or uncommented line loses its ``# `` (trailing comments stay comments).
    """
    lines, blocks = [], []
    in_block = False
    for line in text.splitlines():
        match = COMMENT.match(line)
        if match is None:
            in_block = False
            lines.append(line)
            continue
        if not in_block and YAML_KEY.match(match["text"]):
            in_block = True
            blocks.append(match["text"].split(":", 1)[0])
        lines.append(match["indent"] + match["text"] if in_block else line)
    return "\n".join(lines) + "\n", blocks


def test_sample_loads_as_printed_with_only_the_mock(tmp_path: Path) -> None:
    path = tmp_path / "imagen.yaml"
    path.write_text(sample_config_text(), encoding="utf-8")
    loaded = load_setup(path)
    assert loaded.config.default_backend == "mock"
    assert {name: i.type_name for name, i in loaded.backends.items()} == {"mock": "mock"}
    assert loaded.config.cloud is None
    assert not loaded.config.budget.configured


def load_every_block(sample: str, tmp_path: Path) -> tuple[Setup, list[str]]:
    """Uncomment every block of ``sample``, write the files the blocks name (a user workflow
    goes to ``tmp_path`` and its block points there) and load it with the project's loader."""
    text, blocks = uncomment_blocks(sample)
    raw = yaml.safe_load(text)
    for block in raw["backends"].values():
        workflow = block.get("workflow")
        if block["type"] == "comfyui" and str(workflow).endswith(".json"):
            path = tmp_path / "workflows" / Path(workflow).name
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(CLASSIC_WORKFLOW), encoding="utf-8")
            block["workflow"] = str(path)
    config_path = tmp_path / "imagen.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_setup(config_path), blocks


def test_every_commented_block_of_the_sample_is_valid(tmp_path: Path) -> None:
    loaded, blocks = load_every_block(sample_config_text(), tmp_path)

    assert blocks == [
        "latency_s",
        "comfyui",
        "my_workflow",
        "gpu",
        "replicate",
        "openai",
        "cloud",
        "budget",
        "queue",
        "alerts",
        "retention",
    ]

    expected = {
        "mock": ("mock", MockBackend),
        "comfyui": ("comfyui", ComfyUIBackend),
        "my_workflow": ("comfyui", ComfyUIBackend),
        "gpu": ("comfyui", ComfyUIBackend),
        "replicate": ("replicate", ReplicateBackend),
        "openai": ("openai", OpenAIImagesBackend),
    }
    assert sorted(loaded.backends) == sorted(expected)
    for name, (type_name, backend_cls) in expected.items():
        assert loaded.backends[name].type_name == type_name
        assert isinstance(loaded.backends[name].backend, backend_cls)
    mock = loaded.backends["mock"].backend
    assert isinstance(mock, MockBackend) and mock.latency_s == 2.0

    template = loaded.backends["comfyui"].backend
    assert isinstance(template, ComfyUIBackend)
    assert template.workflow == "flux-dev" and template.url == "http://mrock:8188"
    custom = loaded.backends["my_workflow"].backend
    assert isinstance(custom, ComfyUIBackend)
    mapped = {field: [str(t) for t in ts] for field, ts in custom.load().inputs.items()}
    assert mapped == {
        "prompt": ["6.text"],
        "negative": ["7.text"],
        "seed": ["3.seed"],
        "steps": ["3.steps"],
        "width": ["5.width"],
        "height": ["5.height"],
        "filename_prefix": ["9.filename_prefix"],
    }
    assert custom.model_name() == "sd_xl_base_1.0.safetensors"  # the override applied
    replicate = loaded.backends["replicate"].backend
    assert isinstance(replicate, ReplicateBackend)
    assert replicate.model == "black-forest-labs/flux-dev"
    openai = loaded.backends["openai"].backend
    assert isinstance(openai, OpenAIImagesBackend) and openai.model == "gpt-image-2"
    assert loaded.backends["replicate"].credential_env_vars() == {
        "api_token_env": "REPLICATE_API_TOKEN"
    }
    assert loaded.backends["openai"].credential_env_vars() == {"api_key_env": "OPENAI_API_KEY"}

    config = loaded.config
    assert config.cloud is not None and config.cloud.bucket == "imagen"
    assert sorted(config.budget.backends) == ["openai", "replicate"]
    assert config.queue.max_in_flight_per_owner == 2
    assert config.alerts is not None
    assert config.alerts.webhook_url_env == "IMAGEN_ALERT_WEBHOOK_URL"


@pytest.mark.parametrize(
    ("line", "broken", "message"),
    [
        (
            "#   workflow: flux-dev            #",
            "#   workflow: flux-devv           #",
            "backends.comfyui.workflow: unknown built-in workflow",
        ),
        ('#     seed: "3.seed"', '#     seed: "3.noise_seed"', "backends.my_workflow.inputs.seed"),
        ("#   quality: medium", "#   quality: ultra", "backends.openai.quality"),
        ("#   bucket: imagen", "#   bucket: a/b", "cloud.bucket"),
    ],
)
def test_an_invalid_commented_block_fails_the_check(
    tmp_path: Path, line: str, broken: str, message: str
) -> None:
    sample = sample_config_text()
    assert sample.count(line) == 1
    with pytest.raises(ConfigError) as error:
        load_every_block(sample.replace(line, broken), tmp_path)
    assert message in str(error.value)

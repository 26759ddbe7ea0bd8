"""The built-in workflow templates: ComfyUI API-format graphs shipped in ``templates/`` and
where the request fields go in each."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Template:
    """A built-in workflow: its JSON file and where the request fields go."""

    name: str
    filename: str
    description: str
    inputs: Mapping[str, tuple[str, ...]]

    def graph(self) -> dict[str, Any]:
        """A fresh copy of the template's graph."""
        text = (
            resources.files(__package__)
            .joinpath("templates", self.filename)
            .read_text(encoding="utf-8")
        )
        return json.loads(text)


TEMPLATES: dict[str, Template] = {
    template.name: template
    for template in (
        Template(
            name="flux-dev",
            filename="flux-dev.json",
            description="FLUX.1 dev from split files (UNETLoader in fp8, DualCLIPLoader, "
            "VAELoader) with SamplerCustomAdvanced; 20 steps, guidance 3.5",
            inputs={
                "prompt": ("6.text",),
                "seed": ("25.noise_seed",),
                "width": ("27.width", "30.width"),
                "height": ("27.height", "30.height"),
                "steps": ("17.steps",),
                "guidance": ("26.guidance",),
                "filename_prefix": ("9.filename_prefix",),
            },
        ),
        Template(
            name="flux-schnell",
            filename="flux-schnell.json",
            description="FLUX.1 schnell from split files with SamplerCustomAdvanced; 4 steps, "
            "no guidance",
            inputs={
                "prompt": ("6.text",),
                "seed": ("25.noise_seed",),
                "width": ("27.width",),
                "height": ("27.height",),
                "steps": ("17.steps",),
                "filename_prefix": ("9.filename_prefix",),
            },
        ),
        Template(
            name="flux-fp8",
            filename="flux-fp8.json",
            description="FLUX.1 dev fp8 single checkpoint (CheckpointLoaderSimple) with KSampler "
            "at cfg 1; 20 steps, guidance 3.5",
            inputs={
                "prompt": ("6.text",),
                "negative": ("33.text",),
                "seed": ("31.seed",),
                "width": ("27.width",),
                "height": ("27.height",),
                "steps": ("31.steps",),
                "guidance": ("35.guidance",),
                "filename_prefix": ("9.filename_prefix",),
            },
        ),
        Template(
            name="flux-dev-img2img",
            filename="flux-dev-img2img.json",
            description="FLUX.1 dev image-to-image from split files: LoadImage (the request's "
            "source, uploaded) scaled to the request's size, VAEEncode, KSampler at cfg 1 with "
            "denoise = strength (0.75 when the request sets none); 20 steps, guidance 3.5",
            inputs={
                "prompt": ("6.text",),
                "negative": ("33.text",),
                "seed": ("31.seed",),
                "width": ("42.width",),
                "height": ("42.height",),
                "steps": ("31.steps",),
                "guidance": ("26.guidance",),
                "strength": ("31.denoise",),
                "image": ("40.image",),
                "filename_prefix": ("9.filename_prefix",),
            },
        ),
    )
}


def builtin_names() -> list[str]:
    """Names accepted as ``workflow:`` without a path."""
    return sorted(TEMPLATES)

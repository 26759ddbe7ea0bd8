"""The run config of ``generate_image``: the request as the launchpad, ``dagster job execute
-c`` and the jobs sensor give it (:class:`~imagen_pipeline.generate.planning.ImageSpec` is
the schema; ``imagen_pipeline_tests/defs/test_run_config.py`` keeps the two in step)."""

from __future__ import annotations

import json
from enum import StrEnum

import dagster as dg
from pydantic import Field

from imagen_pipeline.generate.planning import ImageSpec, parse_backend_opts
from imagen_pipeline.prompts.styles import load_styles

StyleName = StrEnum("StyleName", {name: name for name in sorted(load_styles())})
"""The style presets as an enum, so the launchpad offers them and Dagster refuses any other
value before a run starts (``backend`` stays text: the configured instances are read from
imagen.yaml when a run starts, so an edit needs no reload of the code location)."""


class GenerateImageConfig(dg.Config):
    """What to generate. Only ``prompt`` is required."""

    prompt: str = Field(description="What the image should show.")
    negative: str = Field(default="", description="What it should not show.")
    style: StyleName = Field(
        default=StyleName("none"),
        description="Style preset: " + ", ".join(sorted(load_styles())) + ".",
    )
    backend: str = Field(
        default="", description="Backend instance from imagen.yaml; empty: default_backend."
    )
    width: int | None = Field(default=None, description="Width in pixels; empty: style default.")
    height: int | None = Field(default=None, description="Height in pixels; empty: style default.")
    steps: int | None = Field(default=None, description="Sampling steps; empty: backend default.")
    seed: int | None = Field(default=None, description="Seed; empty: the backend picks one.")
    count: int = Field(
        default=1,
        description="Images (variations) of the prompt, 1 to 8; each has its own seed "
        "(seed, seed + 1, ... when a seed is given).",
    )
    backend_opts: str = Field(
        default="{}",
        description='Adapter-specific options as a JSON object, e.g. {"guidance": 3.5}; '
        "passed to the backend unchanged.",
    )
    source_images: list[str] = Field(
        default_factory=list,
        description="Images to start from, in order: imagen.images ids, or absolute paths of "
        "files on the run's host; empty: from text only.",
    )
    mask: str | None = Field(
        default=None, description="Mask of the edit (an image id or a path); empty: none."
    )
    mode: str | None = Field(
        default=None, description="edit or img2img; empty: the backend's default."
    )
    strength: float | None = Field(
        default=None, description="For img2img: 0 (keep the source) to 1 (ignore it)."
    )
    job_id: int | None = Field(
        default=None, description="imagen.jobs row id; set by the jobs sensor, leave empty."
    )
    job_attempt: int | None = Field(
        default=None,
        description="Claim number of that row (imagen.jobs.claims); set by the jobs sensor, "
        "leave empty.",
    )
    owner_user_id: str | None = Field(
        default=None, description="Owner (auth user uuid); set by the jobs sensor, leave empty."
    )
    priority: int = Field(
        default=0, description="Priority of that row; set by the jobs sensor, leave empty."
    )

    @classmethod
    def from_spec(cls, spec: ImageSpec) -> GenerateImageConfig:
        """The run config of a request.

        ``backend_opts`` travels as JSON text, so Dagster's config system and serializer
        never read what a user wrote as structure (keys such as ``__class__``, null values).
        """
        return cls(**{**spec.model_dump(), "backend_opts": json.dumps(spec.backend_opts)})

    def to_spec(self) -> ImageSpec:
        """The plain-Python request this config describes; raises for bad ``backend_opts``."""
        return ImageSpec(
            **{
                **self.model_dump(),
                "style": self.style.value,
                "backend_opts": parse_backend_opts(self.backend_opts),
            }
        )

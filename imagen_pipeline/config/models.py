"""Pydantic models of ``imagen.yaml`` (the seed's format).

Backend blocks stay raw dicts here: each adapter validates its own block
(see :mod:`imagen_pipeline.backends.registry`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imagen_pipeline.output.naming import DEFAULT_NAMING, validate_template

DEFAULT_BACKENDS: dict[str, dict[str, Any]] = {"mock": {"type": "mock"}}


class OutputConfig(BaseModel):
    """Where images go and how they are named."""

    model_config = ConfigDict(extra="forbid")

    directory: str = Field(
        default="./output",
        description="Output directory; relative paths resolve against the config file's folder.",
    )
    naming: str = Field(default=DEFAULT_NAMING, description="Filename template, no extension.")
    write_metadata_json: bool = Field(
        default=True, description="Write a JSON sidecar next to each image."
    )

    @field_validator("naming")
    @classmethod
    def _check_naming(cls, value: str) -> str:
        validate_template(value)
        return value


class ImagenConfig(BaseModel):
    """The whole ``imagen.yaml``."""

    model_config = ConfigDict(extra="forbid")

    default_backend: str = Field(
        default="mock", description="Backend instance used when none is named."
    )
    output: OutputConfig = Field(default_factory=OutputConfig)
    backends: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: dict(block) for name, block in DEFAULT_BACKENDS.items()},
        description="Backend instances: name -> {type, ...adapter fields}.",
    )

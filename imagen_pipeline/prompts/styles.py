"""Style presets loaded from the embedded ``styles.yaml``."""

from __future__ import annotations

import functools
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from imagen_pipeline.errors import InvalidRequestError

PROMPT_MARKER = "{prompt}"


class StylePreset(BaseModel):
    """A template around the prompt, an optional negative prompt and default size/steps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    template: str
    negative: str = ""
    width: int | None = Field(default=None, ge=64, le=4096)
    height: int | None = Field(default=None, ge=64, le=4096)
    steps: int | None = Field(default=None, ge=1, le=200)

    @field_validator("template")
    @classmethod
    def _has_marker(cls, value: str) -> str:
        if PROMPT_MARKER not in value:
            raise ValueError(f"template must contain {PROMPT_MARKER}")
        return value


@functools.cache
def load_styles() -> dict[str, StylePreset]:
    """All presets by name, read once from the package."""
    text = resources.files("imagen_pipeline.prompts").joinpath("styles.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    return {name: StylePreset(name=name, **block) for name, block in raw.items()}


def get_style(name: str) -> StylePreset:
    """The preset called ``name``, or an error listing the known styles."""
    styles = load_styles()
    if name not in styles:
        raise InvalidRequestError(
            "style", f"unknown style {name!r}; known styles: {', '.join(sorted(styles))}"
        )
    return styles[name]


def apply_style(preset: StylePreset, prompt: str, negative: str = "") -> tuple[str, str]:
    """Enriched (prompt, negative): the template around the prompt, negatives joined."""
    enriched = preset.template.replace(PROMPT_MARKER, prompt.strip())
    negatives = [part for part in (negative.strip(), preset.negative) if part]
    return enriched, ", ".join(negatives)

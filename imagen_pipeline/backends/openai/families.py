"""OpenAI's image model families: the models each one covers and the parameters it accepts."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["gpt-image", "dall-e-3", "dall-e-2"]
FamilySetting = Literal["auto", "gpt-image", "dall-e-3", "dall-e-2"]


@dataclass(frozen=True)
class FamilyRules:
    """What one model family accepts in an ``images/generations`` body."""

    label: str
    sizes: tuple[str, ...]
    """Fixed ``WxH`` sizes the family renders (what a request's width x height maps to)."""
    choices: dict[str, tuple[str, ...]]
    """Parameter -> allowed string values."""
    max_prompt_chars: int
    numbers: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Integer parameter -> (lowest, highest) allowed value."""

    @property
    def parameters(self) -> list[str]:
        """Every optional parameter this family accepts."""
        return sorted({*self.choices, *self.numbers, "user"})


GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536")
DALL_E_3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
DALL_E_2_SIZES = ("256x256", "512x512", "1024x1024")

FAMILIES: dict[Family, FamilyRules] = {
    "gpt-image": FamilyRules(
        label="GPT image models",
        sizes=GPT_IMAGE_SIZES,
        choices={
            "size": (*GPT_IMAGE_SIZES, "auto"),
            "quality": ("low", "medium", "high", "auto"),
            "background": ("transparent", "opaque", "auto"),
            "output_format": ("png", "jpeg", "webp"),
            "moderation": ("low", "auto"),
        },
        numbers={"output_compression": (0, 100)},
        max_prompt_chars=32000,
    ),
    "dall-e-3": FamilyRules(
        label="dall-e-3",
        sizes=DALL_E_3_SIZES,
        choices={
            "size": DALL_E_3_SIZES,
            "quality": ("standard", "hd"),
            "style": ("vivid", "natural"),
            "response_format": ("b64_json",),
        },
        max_prompt_chars=4000,
    ),
    "dall-e-2": FamilyRules(
        label="dall-e-2",
        sizes=DALL_E_2_SIZES,
        choices={
            "size": DALL_E_2_SIZES,
            "quality": ("standard",),
            "response_format": ("b64_json",),
        },
        max_prompt_chars=1000,
    ),
}
"""Allowed values per model family, from OpenAI's API reference for image generation."""

GPT_IMAGE_MODELS = frozenset({"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"})
SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def undated(model: str) -> str:
    """``gpt-image-1-2025-04-15`` -> ``gpt-image-1``: the model a dated snapshot belongs to."""
    return SNAPSHOT_DATE.sub("", model)


def model_family(model: str) -> Family | None:
    """The family of a known model name (dated snapshots included), else None."""
    base = undated(model)
    if base == "dall-e-3":
        return "dall-e-3"
    if base == "dall-e-2":
        return "dall-e-2"
    if base in GPT_IMAGE_MODELS:
        return "gpt-image"
    return None


def parameter_problem(family: Family, model: str, name: str, value: Any) -> str | None:
    """Why ``name: value`` is not accepted by the family, naming the allowed values; or None."""
    rules = FAMILIES[family]
    which = model if rules.label == model else f"{model} ({rules.label})"
    if name in rules.choices:
        allowed = rules.choices[name]
        if value not in allowed:
            return (
                f"{name}: {value!r} is not offered by {which}; allowed values: {', '.join(allowed)}"
            )
        return None
    if name in rules.numbers:
        low, high = rules.numbers[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"{name}: {value!r} is not an integer from {low} to {high}"
        return None
    if name == "user":
        return None if isinstance(value, str) else f"user: must be a string (got {value!r})"
    return f"{name}: not a parameter of {which}; parameters: {', '.join(rules.parameters)}"


def combination_problems(body: dict[str, Any]) -> list[str]:
    """GPT image parameters that are valid alone but not together."""
    problems = []
    output_format = body.get("output_format", "png")
    if body.get("background") == "transparent" and output_format == "jpeg":
        problems.append("background: transparent needs output_format png or webp (jpeg is set)")
    if "output_compression" in body and output_format not in ("jpeg", "webp"):
        problems.append(
            f"output_compression: applies to output_format jpeg or webp only "
            f"({output_format} is set)"
        )
    return problems


def nearest_size(sizes: tuple[str, ...], width: int, height: int) -> str:
    """The size with the closest aspect ratio, then the closest pixel count."""
    ratio, area = math.log(width / height), math.log(width * height)

    def distance(size: str) -> tuple[float, float]:
        w, h = (int(part) for part in size.split("x"))
        return round(abs(math.log(w / h) - ratio), 9), abs(math.log(w * h) - area)

    return min(sizes, key=distance)

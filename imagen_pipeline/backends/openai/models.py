"""OpenAI's image models and the request rules of each: what ``images/generations`` accepts
before anything is sent.

The rules are gpt-image-2's as OpenAI publishes them. OpenAI's own pages could not be read
from here; these are its API reference's rules as quoted by API resellers that relay it
unchanged (docs.anyfast.ai and xairouter.com, read 2026-12-02): ``size`` is ``auto`` or
``WxH`` with both edges multiples of 16, an aspect ratio of at most 3:1, 655,360 to
8,294,400 pixels and a longest edge of at most 3,840; the answer is always ``b64_json``.
``background: transparent`` is refused: OpenAI withdrew it for gpt-image-2 on 2026-09-30
and answers 400 "Transparent background is not supported for this model." (reported by API
resellers on 2026-10-15).

Edits (``POST /images/edits``, multipart/form-data), looked up with the ``search`` tool on
2026-12-07 in OpenAI's API reference as mirrored by Microsoft Learn ("Create an image edit",
learn.microsoft.com/en-us/azure/foundry/reference/rest/images-create-image-edit-multipart-
images-create-image-edit-json) and by the generated clients async-openai 0.43.0
(docs.rs/async-openai/0.43.0, ``CreateImageEditRequest``) and openai-client-base 0.16.0: the
GPT image models, gpt-image-2 and its snapshot gpt-image-2-2026-04-21 named among them, take
up to 16 images (``image[]``), each a png, webp or jpg file of less than 50MB; the optional
``mask`` is a PNG of less than 4MB with the first image's dimensions, and the model edits
where it is fully transparent (alpha zero); the prompt takes up to 32,000 characters. The
multipart form takes ``model``, ``prompt``, ``n``, ``size``, ``quality``, ``background``,
``output_format``, ``output_compression`` and ``user``; ``moderation`` belongs to the JSON
form of the endpoint only, so an edit sent as multipart refuses it here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from imagen_pipeline.backends.retired import RetiredModel, find_retired

Family = Literal["gpt-image-2"]
FamilySetting = Literal["auto", "gpt-image-2"]

DEFAULT_MODEL = "gpt-image-2"
MODELS: dict[str, Family] = {"gpt-image-2": "gpt-image-2"}
"""Model names this adapter knows (dated snapshots of them included) and their rules."""

EDIT_MAX_IMAGES = 16
"""Most images one edit takes (``image[]``)."""
EDIT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
"""Each edit image must be smaller than this (the pipeline's own 25 MiB limit is lower)."""
EDIT_FORMATS = ("PNG", "JPEG", "WEBP")
MASK_MAX_BYTES = 4 * 1024 * 1024
"""The mask must be a PNG smaller than this, with the first image's dimensions."""
EDIT_ONLY_JSON = ("moderation",)
"""Parameters of ``images/generations`` that the multipart edit form does not take."""

SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")

MIN_PIXELS, MAX_PIXELS = 655_360, 8_294_400
MAX_EDGE, EDGE_MULTIPLE, MAX_RATIO = 3_840, 16, 3.0
SIZE_FORM = re.compile(r"^(\d{1,5})x(\d{1,5})$")


@dataclass(frozen=True)
class FamilyRules:
    """What one model family accepts in an ``images/generations`` body besides ``size``."""

    label: str
    choices: dict[str, tuple[str, ...]]
    """Parameter -> allowed string values."""
    max_prompt_chars: int
    numbers: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Integer parameter -> (lowest, highest) allowed value."""
    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    """Parameter -> value -> why the model refuses it although the API once offered it."""

    @property
    def parameters(self) -> list[str]:
        """Every optional parameter this family accepts."""
        return sorted({*self.choices, *self.numbers, "size", "user"})


FAMILIES: dict[Family, FamilyRules] = {
    "gpt-image-2": FamilyRules(
        label="gpt-image-2",
        choices={
            "quality": ("low", "medium", "high", "auto"),
            "background": ("opaque", "auto"),
            "output_format": ("png", "jpeg", "webp"),
            "moderation": ("auto", "low"),
        },
        numbers={"output_compression": (0, 100)},
        refused={
            "background": {
                "transparent": "gpt-image-2 no longer renders transparent backgrounds "
                "(withdrawn by OpenAI on 2026-09-30)"
            }
        },
        max_prompt_chars=32000,
    ),
}


def undated(model: str) -> str:
    """``gpt-image-2-2026-04-21`` -> ``gpt-image-2``: the model a dated snapshot belongs to."""
    return SNAPSHOT_DATE.sub("", model)


def model_family(model: str) -> Family | None:
    """The family of a known model name (dated snapshots included), else None."""
    return MODELS.get(undated(model))


def retired_openai_model(model: str) -> RetiredModel | None:
    """The shutdown of ``model`` (or of the model a dated snapshot belongs to), if any."""
    return find_retired("OpenAI", model) or find_retired("OpenAI", undated(model))


def size_problems(size: str) -> list[str]:
    """Every size rule ``size`` breaks (empty when OpenAI accepts it)."""
    if size == "auto":
        return []
    match = SIZE_FORM.fullmatch(size)
    if match is None:
        return [f"size: {size!r} is not auto or WIDTHxHEIGHT (such as 1536x1024)"]
    width, height = int(match[1]), int(match[2])
    problems = []
    if width % EDGE_MULTIPLE or height % EDGE_MULTIPLE:
        problems.append(f"size {size}: both edges must be multiples of {EDGE_MULTIPLE}")
    if min(width, height) == 0 or max(width, height) / min(width, height) > MAX_RATIO:
        problems.append(f"size {size}: the aspect ratio may be at most 3:1")
    if not MIN_PIXELS <= width * height <= MAX_PIXELS:
        problems.append(
            f"size {size}: {width * height:,} pixels; allowed {MIN_PIXELS:,} to {MAX_PIXELS:,}"
        )
    if max(width, height) > MAX_EDGE:
        problems.append(f"size {size}: the longest edge may be at most {MAX_EDGE:,}")
    return problems


def fitting_size(width: int, height: int) -> str:
    """The allowed ``WxH`` closest to ``width`` x ``height``: aspect ratio first (clamped to
    3:1), then pixel count (clamped to the allowed range), edges rounded to multiples of 16."""
    ratio = min(MAX_RATIO, max(1 / MAX_RATIO, width / height))
    area = min(MAX_PIXELS, max(MIN_PIXELS, width * height))
    target_w, target_h = math.sqrt(area * ratio), math.sqrt(area / ratio)
    shrink = min(1.0, MAX_EDGE / max(target_w, target_h))
    target_w, target_h = target_w * shrink, target_h * shrink
    base_w, base_h = round(target_w / EDGE_MULTIPLE), round(target_h / EDGE_MULTIPLE)
    candidates = [
        f"{(base_w + dw) * EDGE_MULTIPLE}x{(base_h + dh) * EDGE_MULTIPLE}"
        for dw in range(-2, 3)
        for dh in range(-2, 3)
        if base_w + dw > 0 and base_h + dh > 0
    ]

    def distance(size: str) -> tuple[float, float]:
        w, h = (int(part) for part in size.split("x"))
        return round(abs(math.log(w / h) - math.log(ratio)), 6), abs(math.log(w * h / area))

    return min((size for size in candidates if not size_problems(size)), key=distance)


def parameter_problem(family: Family, model: str, name: str, value: Any) -> str | None:
    """Why ``name: value`` is not accepted by the family, naming the allowed values; or None."""
    rules = FAMILIES[family]
    which = model if rules.label == model else f"{model} ({rules.label} rules)"
    if name == "size":
        if not isinstance(value, str):
            return f"size: must be a string such as 1536x1024 or auto (got {value!r})"
        problems = size_problems(value)
        return "; ".join(problems) if problems else None
    reason = rules.refused.get(name, {}).get(value) if isinstance(value, str) else None
    if reason is not None:
        allowed = ", ".join(rules.choices.get(name, ()))
        return f"{name}: {value!r} is refused: {reason}; allowed values: {allowed}"
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
    """Parameters that are valid alone but not together."""
    output_format = body.get("output_format", "png")
    if "output_compression" in body and output_format not in ("jpeg", "webp"):
        return [
            f"output_compression: applies to output_format jpeg or webp only "
            f"({output_format} is set)"
        ]
    return []

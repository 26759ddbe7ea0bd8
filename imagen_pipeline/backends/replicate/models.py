"""Which Replicate model a block names: its reference, its input style and its price."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from imagen_pipeline.backends.pricing import Price

DEFAULT_PRICES_USD: dict[str, float] = {
    "black-forest-labs/flux-schnell": 0.003,
    "black-forest-labs/flux-dev": 0.025,
    "black-forest-labs/flux-1.1-pro": 0.04,
}
"""US dollars per output image, from replicate.com/pricing as transcribed on 2026-10-07 (the
newest reading found on 2026-12-02). FLUX.2 models are priced by megapixel and have no
confirmed per-image price, so none ships; ``prices`` in the config overrides or extends the
table."""
PRICES_READ = "replicate.com/pricing, read 2026-10-07"

InputStyle = Literal[
    "auto", "flux-schnell", "flux-dev", "flux-pro", "flux-2", "flux-kontext", "generic"
]
AUTO_STYLES: dict[str, InputStyle] = {
    "flux-schnell": "flux-schnell",
    "flux-dev": "flux-dev",
    "flux-1.1-pro": "flux-pro",
    "flux-2-pro": "flux-2",
    "flux-2-flex": "flux-2",
    "flux-2-max": "flux-2",
    "flux-kontext-pro": "flux-kontext",
    "flux-kontext-max": "flux-kontext",
}
"""Model name (the part after ``owner/``) -> input style chosen by ``input_style: auto``."""

SOURCE_INPUTS: dict[InputStyle, str] = {"flux-kontext": "input_image", "flux-2": "input_images"}
"""Style -> the model input that takes source images: one image (a string) for FLUX.1
Kontext, a list for FLUX.2."""
MAX_SOURCE_IMAGES: dict[str, int] = {
    "flux-kontext-pro": 1,
    "flux-kontext-max": 1,
    "flux-2-pro": 8,
    "flux-2-max": 8,
    "flux-2-flex": 10,
}
"""Most source images per model, from the models' input schemas on Replicate, read with the
``search`` tool on 2026-12-07: flux-kontext-pro ``input_image`` "Image to use as reference.
Must be jpeg, png, gif, or webp." (replicate.com/black-forest-labs/flux-kontext-pro/versions/
0a138193.../api; flux-kontext-max has the same inputs); flux-2-pro ``input_images`` "Maximum
8 images. Must be jpeg, png, gif, or webp." (versions/285631b5.../api); flux-2-max the same
(versions/9c23b0aa.../api); flux-2-flex "Maximum 10 images" (its schema as mirrored by
cinemasetfree.com, and "support for ten reference images" in its description)."""
DEFAULT_MAX_SOURCE_IMAGES: dict[InputStyle, int] = {"flux-kontext": 1, "flux-2": 8}
"""For a model of the style that the table does not name (a version id): the lower limit."""
KONTEXT_MAX_SAFETY_WITH_IMAGES = 2
"""FLUX.1 Kontext's ``safety_tolerance`` schema: "2 is currently the maximum allowed when input
images are used" (the same flux-kontext-pro page, 2026-12-07)."""
DATA_URI_ADVISED_BYTES = 1024 * 1024
"""Replicate advises a data URI only for a file under 1MB (replicate.com/docs/topics/
predictions/input-files, read 2026-12-07); a source of this size or more is uploaded with
Replicate's Files API (``POST /v1/files``) and its ``urls.get`` sent instead."""

VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelRef:
    """``owner/name`` (official model), ``owner/name:version`` or a bare version id."""

    name: str | None
    version: str | None

    @property
    def create_path(self) -> str:
        """Path (below the base URL) that creates a prediction for this model."""
        if self.version is None:
            return f"/models/{self.name}/predictions"
        return "/predictions"

    @property
    def check_path(self) -> str:
        """Path that reads the model or version (the account for a bare version id)."""
        if self.name is None:
            return "/account"
        if self.version is None:
            return f"/models/{self.name}"
        return f"/models/{self.name}/versions/{self.version}"


def parse_model_ref(value: str) -> ModelRef:
    """Split a configured ``model`` value; raises ``ValueError`` naming the accepted forms."""
    name, _, version = value.strip().partition(":")
    if not version and VERSION_ID.fullmatch(name):
        return ModelRef(name=None, version=name)
    if MODEL_NAME.fullmatch(name) and (not version or VERSION_ID.fullmatch(version)):
        return ModelRef(name=name, version=version or None)
    raise ValueError(
        "expected an official model 'owner/name', 'owner/name:<64-hex version id>' "
        "or a 64-hex version id"
    )


def resolve_input_style(ref: ModelRef, configured: InputStyle) -> InputStyle:
    """The input style to map requests with; ``auto`` looks at the model name."""
    if configured != "auto":
        return configured
    short_name = (ref.name or "").rpartition("/")[2]
    return AUTO_STYLES.get(short_name, "generic")


def max_source_images(ref: ModelRef, style: InputStyle) -> int:
    """How many source images the model takes (0: none)."""
    if style not in SOURCE_INPUTS:
        return 0
    short_name = (ref.name or "").rpartition("/")[2]
    return MAX_SOURCE_IMAGES.get(short_name, DEFAULT_MAX_SOURCE_IMAGES[style])


def image_price(model: str, prices: Mapping[str, float]) -> Price:
    """The price of one image: ``prices`` first, then the built-in table, else unknown."""
    ref = parse_model_ref(model)
    keys = [key for key in (model, ref.name, ref.version) if key]
    for key in keys:
        if key in prices:
            return Price(prices[key], "config", f"prices.{key} in imagen.yaml")
    for key in keys:
        if key in DEFAULT_PRICES_USD:
            return Price(DEFAULT_PRICES_USD[key], "built_in", f"built-in table ({PRICES_READ})")
    return Price(None, "unknown", f"no price known for {model}: set prices.{keys[0]}")

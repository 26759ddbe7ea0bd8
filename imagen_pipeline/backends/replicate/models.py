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

InputStyle = Literal["auto", "flux-schnell", "flux-dev", "flux-pro", "flux-2", "generic"]
AUTO_STYLES: dict[str, InputStyle] = {
    "flux-schnell": "flux-schnell",
    "flux-dev": "flux-dev",
    "flux-1.1-pro": "flux-pro",
    "flux-2-pro": "flux-2",
    "flux-2-flex": "flux-2",
    "flux-2-max": "flux-2",
}
"""Model name (the part after ``owner/``) -> input style chosen by ``input_style: auto``."""

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

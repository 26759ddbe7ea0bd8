"""What an OpenAI image costs: token prices and ``usage`` for GPT image models, a price
per image for DALL·E, and the estimate before a call."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imagen_pipeline.backends.openai.families import undated
from imagen_pipeline.backends.openai.request import PreparedRequest

TOKEN_PRICE_KEYS = ("text_input", "image_input", "image_output")
DEFAULT_TOKEN_PRICES: dict[str, dict[str, float]] = {
    "gpt-image-1": {"text_input": 5.0, "image_input": 10.0, "image_output": 40.0},
    "gpt-image-1-mini": {"text_input": 2.0, "image_input": 2.5, "image_output": 8.0},
}
"""US dollars per 1M tokens (OpenAI's published prices); ``token_prices`` overrides them."""

GPT_OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
"""Image output tokens of one GPT image by quality and size, for estimates before a call."""

DEFAULT_IMAGE_PRICES: dict[str, dict[str, float]] = {
    "dall-e-3": {
        "standard 1024x1024": 0.04,
        "standard 1792x1024": 0.08,
        "standard 1024x1792": 0.08,
        "hd 1024x1024": 0.08,
        "hd 1792x1024": 0.12,
        "hd 1024x1792": 0.12,
    },
    "dall-e-2": {
        "standard 256x256": 0.016,
        "standard 512x512": 0.018,
        "standard 1024x1024": 0.02,
    },
}
"""US dollars per DALL·E image by ``"<quality> <size>"``; ``image_prices`` overrides them."""

IMAGE_PRICE_KEY = re.compile(r"^[a-z]+ \d+x\d+$")
"""A key of ``image_prices``: ``"<quality> <WxH>"``."""


@dataclass(frozen=True)
class ModelPrices:
    """What one configured model costs: the built-in tables with the block's overrides."""

    tokens: dict[str, float] | None
    """US dollars per 1M tokens by ``TOKEN_PRICE_KEYS``; None when the model has none."""
    images: dict[str, float]
    """US dollars per DALL·E image by ``"<quality> <size>"``."""


def model_prices(
    model: str,
    token_prices: Mapping[str, dict[str, float]],
    image_prices: Mapping[str, dict[str, float]],
) -> ModelPrices:
    """The prices of ``model`` (a dated snapshot falls back to its model's prices):
    ``token_prices`` replace a model's built-in token prices, ``image_prices`` override the
    built-in image prices entry by entry."""
    tokens = {**DEFAULT_TOKEN_PRICES, **token_prices}
    base = undated(model)
    return ModelPrices(
        tokens=tokens.get(model) or tokens.get(base),
        images={
            **DEFAULT_IMAGE_PRICES.get(base, {}),
            **image_prices.get(base, {}),
            **image_prices.get(model, {}),
        },
    )


def usage_cost_usd(usage: dict[str, Any], prices: dict[str, float]) -> float:
    """Dollars for a ``usage`` object: text and image input tokens, image output tokens."""

    def count(source: Any, key: str) -> int:
        value = source.get(key) if isinstance(source, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    details = usage.get("input_tokens_details")
    if isinstance(details, dict):
        text_tokens, image_tokens = count(details, "text_tokens"), count(details, "image_tokens")
    else:
        text_tokens, image_tokens = count(usage, "input_tokens"), 0
    dollars = (
        text_tokens * prices["text_input"]
        + image_tokens * prices["image_input"]
        + count(usage, "output_tokens") * prices["image_output"]
    ) / 1_000_000
    return round(dollars, 6)


def cost_usd(
    prepared: PreparedRequest, prices: ModelPrices, usage: dict[str, Any] | None
) -> tuple[float, str]:
    """Dollars and where they come from: usage, price_table, estimate or unpriced."""
    if prepared.family == "gpt-image" and usage is not None and prices.tokens is not None:
        return usage_cost_usd(usage, prices.tokens), "usage"
    return estimate_usd(prepared, prices)


def estimate_usd(prepared: PreparedRequest, prices: ModelPrices) -> tuple[float, str]:
    """Dollars before the call, from the price table (DALL·E) or the output tokens of the
    size and quality plus the prompt at about 4 characters per token (GPT image models)."""
    body = prepared.body
    if prepared.family != "gpt-image":
        quality = body.get("quality") or "standard"
        price = prices.images.get(f"{quality} {body['size']}")
        return (price, "price_table") if price is not None else (0.0, "unpriced")
    if prices.tokens is None:
        return 0.0, "unpriced"
    quality = body.get("quality")
    by_size = GPT_OUTPUT_TOKENS["high" if quality in (None, "auto") else quality]
    size = body["size"]
    output_tokens = max(by_size.values()) if size == "auto" else by_size[size]
    usage = {"input_tokens": math.ceil(len(body["prompt"]) / 4), "output_tokens": output_tokens}
    return usage_cost_usd(usage, prices.tokens), "estimate"

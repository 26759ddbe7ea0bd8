"""What an OpenAI image costs: token prices times the ``usage`` OpenAI reports, and the
estimate before a call.

No built-in price ships for gpt-image-2: OpenAI's pricing page could not be read from here
(2026-12-02), and resellers' figures are not OpenAI's. Until ``token_prices`` is set in
``imagen.yaml`` the cost is recorded as unknown (NULL), never guessed. docs/backends.md shows
the block to set.

An edit is billed by the same token kinds: the source images (and the mask) count as image
input tokens, which the answer's ``usage.input_tokens_details.image_tokens`` reports, so the
recorded cost of an edit is exact once prices are set. The estimate before the call needs a
count OpenAI does not publish for gpt-image-2 input images (searched 2026-12-07: the API
reference documents the ``usage`` fields, not how an input image is tokenized); it assumes
an input image costs as many tokens as a high-quality output image of its pixel count
(:data:`INPUT_TOKENS_PER_MEGAPIXEL`), a deliberately high guess so the budget errs on the
side of refusing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from imagen_pipeline.backends.openai.models import undated
from imagen_pipeline.backends.openai.request import PreparedRequest
from imagen_pipeline.backends.pricing import Price

TOKEN_PRICE_KEYS = ("text_input", "image_input", "image_output")
DEFAULT_TOKEN_PRICES: dict[str, dict[str, float]] = {}
"""US dollars per 1M tokens by model, as OpenAI publishes them; empty: none confirmed."""

OUTPUT_TOKENS_PER_MEGAPIXEL = {"low": 260, "medium": 1010, "high": 3970}
"""Image output tokens per million pixels by quality, for estimates before a call: OpenAI's
published counts for its GPT image models (1024x1024: 272, 1056, 4160 tokens). The recorded
cost uses the ``usage`` of the answer instead."""
INPUT_TOKENS_PER_MEGAPIXEL = OUTPUT_TOKENS_PER_MEGAPIXEL["high"]
"""Assumed image input tokens per million pixels of a source image or mask, for estimates
only (see the module docstring)."""
AUTO_SIZE_PIXELS = 1536 * 1024
"""Pixels assumed for ``size: auto`` in an estimate."""


def token_prices_for(
    model: str, configured: Mapping[str, dict[str, float]], instance: str
) -> tuple[dict[str, float] | None, Price]:
    """The token prices of ``model`` (a dated snapshot falls back to its model's) and where
    they come from; the price's ``usd`` is filled in per image."""
    for name in (model, undated(model)):
        if name in configured:
            where = f"backends.{instance}.token_prices.{name}" if instance else "token_prices"
            return configured[name], Price(None, "config", f"token prices from {where}")
    for name in (model, undated(model)):
        if name in DEFAULT_TOKEN_PRICES:
            return DEFAULT_TOKEN_PRICES[name], Price(
                None, "built_in", "OpenAI's published token prices (built-in table)"
            )
    where = f"backends.{instance}.token_prices" if instance else "token_prices"
    return None, Price(
        None,
        "unknown",
        f"no price known for {model}: set {where}.{undated(model)} "
        "(US dollars per 1M tokens: text_input, image_input, image_output)",
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


def estimated_usage(prepared: PreparedRequest) -> dict[str, Any]:
    """The ``usage`` a request is expected to report: output tokens from its size and
    quality, the prompt at about 4 characters per token, and for an edit image input tokens
    from each input image's pixels."""
    body = prepared.body
    quality = body.get("quality")
    per_megapixel = OUTPUT_TOKENS_PER_MEGAPIXEL["high" if quality in (None, "auto") else quality]
    size = body["size"]
    if size == "auto":
        pixels = AUTO_SIZE_PIXELS
    else:
        width, height = (int(part) for part in size.split("x"))
        pixels = width * height
    text_tokens = math.ceil(len(body["prompt"]) / 4)
    image_tokens = sum(
        math.ceil(INPUT_TOKENS_PER_MEGAPIXEL * item / 1_000_000) for item in prepared.input_pixels
    )
    return {
        "input_tokens": text_tokens + image_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
        "output_tokens": math.ceil(per_megapixel * pixels / 1_000_000),
    }


def image_price(
    prices: dict[str, float] | None, source: Price, usage: dict[str, Any] | None
) -> Price:
    """The price of one answered image: ``usage`` times the token prices, else unknown."""
    if prices is None:
        return source
    if usage is None:
        return Price(None, "unknown", f"the answer reported no usage ({source.note})")
    return Price(usage_cost_usd(usage, prices), source.source, f"{source.note} x usage")


def estimate_price(
    prices: dict[str, float] | None, source: Price, prepared: PreparedRequest
) -> Price:
    """The expected price of ``prepared`` before the call (unknown without prices)."""
    if prices is None:
        return source
    return Price(
        usage_cost_usd(estimated_usage(prepared), prices),
        source.source,
        f"{source.note} x estimated tokens",
    )

"""What an OpenAI image costs: from ``usage``, from the tables, or nothing when unpriced."""

from __future__ import annotations

from typing import Any

from imagen_pipeline.backends.openai.families import Family
from imagen_pipeline.backends.openai.pricing import (
    cost_usd,
    estimate_usd,
    model_prices,
    usage_cost_usd,
)
from imagen_pipeline.backends.openai.request import PreparedRequest

GPT_IMAGE_1 = {"text_input": 5.0, "image_input": 10.0, "image_output": 40.0}


def prepared(family: Family = "gpt-image", **body: Any) -> PreparedRequest:
    return PreparedRequest(
        family=family,
        body={"model": "m", "prompt": "x" * 40, "n": 1, "size": "1024x1024", **body},
        requested_size="1024x1024",
    )


def test_usage_prices_text_image_input_and_output_tokens() -> None:
    usage = {
        "input_tokens": 60,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 10},
        "output_tokens": 1056,
    }
    assert usage_cost_usd(usage, GPT_IMAGE_1) == round(
        (50 * 5.0 + 10 * 10.0 + 1056 * 40.0) / 1_000_000, 6
    )
    assert usage_cost_usd({"input_tokens": 8, "output_tokens": True}, GPT_IMAGE_1) == 0.00004


def test_snapshots_use_their_models_prices_and_overrides_apply() -> None:
    snapshot = model_prices("gpt-image-1-2025-04-15", {}, {})
    assert snapshot.tokens == GPT_IMAGE_1
    replaced = {"text_input": 1.0, "image_input": 1.0, "image_output": 1.0}
    assert model_prices("gpt-image-1", {"gpt-image-1": replaced}, {}).tokens == replaced
    assert model_prices("gpt-image-1.5", {}, {}).tokens is None
    images = model_prices("dall-e-3", {}, {"dall-e-3": {"hd 1024x1024": 0.1}}).images
    assert (images["hd 1024x1024"], images["standard 1024x1024"]) == (0.1, 0.04)


def test_usage_wins_over_the_estimate_when_the_model_has_token_prices() -> None:
    prices = model_prices("gpt-image-1", {}, {})
    usage = {"input_tokens": 10, "output_tokens": 272}
    assert cost_usd(prepared(quality="low"), prices, usage) == (
        round((10 * 5.0 + 272 * 40.0) / 1_000_000, 6),
        "usage",
    )
    assert cost_usd(prepared(quality="low"), prices, None) == (
        estimate_usd(prepared(quality="low"), prices)[0],
        "estimate",
    )


def test_estimates_assume_high_quality_and_the_largest_size_for_auto() -> None:
    prices = model_prices("gpt-image-1", {}, {})
    text = 10 * 5.0 / 1_000_000
    assert estimate_usd(prepared(), prices) == (round(text + 4160 * 40 / 1_000_000, 6), "estimate")
    assert estimate_usd(prepared(size="auto", quality="medium"), prices) == (
        round(text + 1584 * 40 / 1_000_000, 6),
        "estimate",
    )


def test_dall_e_uses_the_price_table_and_a_missing_price_is_unpriced() -> None:
    dall_e_3 = model_prices("dall-e-3", {}, {})
    assert estimate_usd(prepared("dall-e-3", size="1792x1024", quality="hd"), dall_e_3) == (
        0.12,
        "price_table",
    )
    assert estimate_usd(prepared("dall-e-3", size="512x512"), dall_e_3) == (0.0, "unpriced")
    unpriced = model_prices("gpt-image-1.5", {}, {})
    assert cost_usd(prepared(), unpriced, {"output_tokens": 10}) == (0.0, "unpriced")

"""What an OpenAI image costs: configured token prices times ``usage``, the estimate before a
call, and an unknown price when no table has the model."""

from __future__ import annotations

from typing import Any

from imagen_pipeline.backends.openai.pricing import (
    estimate_price,
    image_price,
    token_prices_for,
    usage_cost_usd,
)
from imagen_pipeline.backends.openai.request import PreparedRequest

PRICES = {"text_input": 5.0, "image_input": 8.0, "image_output": 30.0}


def prepared(**body: Any) -> PreparedRequest:
    return PreparedRequest(
        family="gpt-image-2",
        body={"model": "gpt-image-2", "prompt": "x" * 40, "n": 1, "size": "1024x1024", **body},
        requested_size="1024x1024",
    )


def test_usage_prices_text_image_input_and_output_tokens() -> None:
    usage = {
        "input_tokens": 60,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 10},
        "output_tokens": 1056,
    }
    assert usage_cost_usd(usage, PRICES) == round((50 * 5.0 + 10 * 8.0 + 1056 * 30.0) / 1e6, 6)
    assert usage_cost_usd({"input_tokens": 8, "output_tokens": True}, PRICES) == 0.00004


def test_snapshots_use_their_models_configured_prices_and_nothing_is_built_in() -> None:
    prices, source = token_prices_for("gpt-image-2-2026-04-21", {"gpt-image-2": PRICES}, "oai")
    assert (prices, source.source) == (PRICES, "config")
    assert source.note == "token prices from backends.oai.token_prices.gpt-image-2"
    exact, _ = token_prices_for("gpt-image-2-2026-04-21", {"gpt-image-2-2026-04-21": {}}, "oai")
    assert exact == {}, "the snapshot's own entry wins over its model's"
    missing, unknown = token_prices_for("gpt-image-2", {}, "oai")
    assert (missing, unknown.usd, unknown.source) == (None, None, "unknown")


def test_usage_makes_the_price_and_a_missing_usage_or_price_leaves_it_unknown() -> None:
    prices, source = token_prices_for("gpt-image-2", {"gpt-image-2": PRICES}, "")
    usage = {"input_tokens": 10, "output_tokens": 272}
    priced = image_price(prices, source, usage)
    assert (priced.usd, priced.source) == (round((10 * 5.0 + 272 * 30.0) / 1e6, 6), "config")
    no_usage = image_price(prices, source, None)
    assert (no_usage.usd, no_usage.source) == (None, "unknown")
    assert "the answer reported no usage" in no_usage.note
    _, unknown = token_prices_for("gpt-image-2", {}, "")
    assert image_price(None, unknown, usage) == unknown


def test_estimates_assume_high_quality_and_1536x1024_for_auto() -> None:
    prices, source = token_prices_for("gpt-image-2", {"gpt-image-2": PRICES}, "")
    text = 10 * 5.0 / 1e6
    assert estimate_price(prices, source, prepared()).usd == round(text + 4163 * 30 / 1e6, 6)
    auto = estimate_price(prices, source, prepared(size="auto", quality="medium"))
    assert auto.usd == round(text + 1589 * 30 / 1e6, 6)
    _, unknown = token_prices_for("gpt-image-2", {}, "")
    assert estimate_price(None, unknown, prepared()).usd is None

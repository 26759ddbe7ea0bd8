"""A request as Replicate model input, per input style (the table in docs/backends.md)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from imagen_pipeline.backends.contract import GenerationRequest
from imagen_pipeline.backends.replicate.inputs import build_input, custom_size, flux_size
from imagen_pipeline.backends.replicate.models import InputStyle

LOGGER = "imagen.test.replicate.inputs"


def mapped(
    style: InputStyle, guidance: float | None = None, **fields: Any
) -> tuple[dict[str, Any], int | None]:
    request = GenerationRequest(**{"prompt": "a fox", "width": 1024, "height": 1024, **fields})
    return build_input(
        request,
        seed=7,
        style=style,
        output_format="png",
        guidance=guidance,
        log=logging.getLogger(LOGGER),
        file_urls={},
    )


@pytest.mark.parametrize(
    ("size", "fields", "rendered"),
    [
        ((1024, 1024), {"aspect_ratio": "1:1"}, (1024, 1024)),
        ((1920, 1080), {"aspect_ratio": "16:9"}, (1344, 768)),
        ((1200, 704), {"aspect_ratio": "16:9"}, (1344, 768)),
        ((896, 1088), {"aspect_ratio": "4:5"}, (896, 1088)),
        ((512, 1024), {"aspect_ratio": "9:16", "megapixels": "0.25"}, (384, 672)),
    ],
)
def test_flux_sizes_pick_the_closest_aspect_ratio(
    size: tuple[int, int], fields: dict[str, str], rendered: tuple[int, int]
) -> None:
    assert flux_size(*size) == (fields, rendered)


@pytest.mark.parametrize(
    ("style", "size", "sent"),
    [
        ("flux-pro", (1000, 600), (992, 608)),
        ("flux-pro", (4000, 2000), (1440, 704)),
        ("flux-pro", (100, 100), (256, 256)),
        ("flux-2", (1000, 600), (992, 608)),
        ("flux-2", (4000, 2000), (2048, 1024)),
        ("flux-2", (2048, 1536), (2048, 1536)),
        ("flux-2", (100, 100), (256, 256)),
    ],
)
def test_custom_sizes_are_scaled_into_the_styles_range_in_multiples_of_32(
    style: str, size: tuple[int, int], sent: tuple[int, int]
) -> None:
    assert custom_size(style, *size) == sent


def test_flux_2_sends_a_custom_size_and_no_steps(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    data, steps = mapped("flux-2", width=1536, height=1024, steps=30)
    assert data == {
        "prompt": "a fox",
        "aspect_ratio": "custom",
        "width": 1536,
        "height": 1024,
        "output_format": "png",
        "seed": 7,
    }
    assert steps is None
    assert "flux-2 has no steps input" in caplog.text


def test_schnell_caps_steps_and_ignores_the_negative_prompt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    data, steps = mapped("flux-schnell", steps=9, negative="blurry", guidance=3.0)
    assert data == {
        "prompt": "a fox",
        "aspect_ratio": "1:1",
        "num_inference_steps": 4,
        "output_format": "png",
        "seed": 7,
    }
    assert steps == 4
    assert "accepts at most 4 steps" in caplog.text
    assert "has no negative prompt input; ignored" in caplog.text
    assert "guidance applies to flux-dev only" in caplog.text


def test_dev_sends_guidance_and_reports_the_default_steps() -> None:
    data, steps = mapped("flux-dev", guidance=3.5)
    assert (data["guidance"], "num_inference_steps" in data, steps) == (3.5, False, 28)


def test_pro_has_no_steps_and_generic_sends_everything_as_given() -> None:
    pro, pro_steps = mapped("flux-pro", steps=20)
    assert (pro["aspect_ratio"], "num_inference_steps" in pro, pro_steps) == ("custom", False, None)
    generic, steps = mapped("generic", steps=25, negative="blurry", width=768, height=512)
    assert generic == {
        "prompt": "a fox",
        "width": 768,
        "height": 512,
        "num_inference_steps": 25,
        "negative_prompt": "blurry",
        "seed": 7,
    }
    assert steps == 25

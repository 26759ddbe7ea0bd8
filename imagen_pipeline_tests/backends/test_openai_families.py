"""What each OpenAI image model family accepts, and which family a model name is in."""

from __future__ import annotations

import pytest

from imagen_pipeline.backends.openai.families import (
    DALL_E_2_SIZES,
    DALL_E_3_SIZES,
    GPT_IMAGE_SIZES,
    Family,
    combination_problems,
    model_family,
    nearest_size,
    parameter_problem,
)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-image-1", "gpt-image"),
        ("gpt-image-1-2025-04-15", "gpt-image"),
        ("gpt-image-1-mini", "gpt-image"),
        ("gpt-image-1.5", "gpt-image"),
        ("dall-e-3", "dall-e-3"),
        ("dall-e-2", "dall-e-2"),
        ("gpt-image-2", None),
        ("chatgpt-image-latest", None),
    ],
)
def test_known_names_and_their_dated_snapshots_have_a_family(
    model: str, family: str | None
) -> None:
    assert model_family(model) == family


@pytest.mark.parametrize(
    ("sizes", "width", "height", "expected"),
    [
        (GPT_IMAGE_SIZES, 1344, 768, "1536x1024"),
        (GPT_IMAGE_SIZES, 768, 1344, "1024x1536"),
        (DALL_E_3_SIZES, 1920, 1080, "1792x1024"),
        (DALL_E_2_SIZES, 800, 600, "512x512"),
        (DALL_E_2_SIZES, 200, 200, "256x256"),
    ],
)
def test_nearest_size_by_aspect_ratio_then_pixel_count(
    sizes: tuple[str, ...], width: int, height: int, expected: str
) -> None:
    assert nearest_size(sizes, width, height) == expected


@pytest.mark.parametrize(
    ("family", "model", "name", "value", "problem"),
    [
        ("gpt-image", "gpt-image-1", "quality", "high", None),
        (
            "gpt-image",
            "gpt-image-1",
            "quality",
            "hd",
            "quality: 'hd' is not offered by gpt-image-1 (GPT image models); allowed values: "
            "low, medium, high, auto",
        ),
        ("dall-e-3", "dall-e-3", "style", "vivid", None),
        (
            "dall-e-3",
            "dall-e-3",
            "background",
            "opaque",
            "background: not a parameter of dall-e-3; parameters: quality, response_format, "
            "size, style, user",
        ),
        ("gpt-image", "gpt-image-1", "output_compression", 80, None),
        (
            "gpt-image",
            "gpt-image-1",
            "output_compression",
            True,
            "output_compression: True is not an integer from 0 to 100",
        ),
        ("gpt-image", "gpt-image-1", "user", 7, "user: must be a string (got 7)"),
    ],
)
def test_parameters_are_checked_against_the_family(
    family: Family, model: str, name: str, value: object, problem: str | None
) -> None:
    assert parameter_problem(family, model, name, value) == problem


def test_transparency_and_compression_need_a_fitting_output_format() -> None:
    assert combination_problems({"background": "transparent", "output_format": "webp"}) == []
    assert combination_problems({"background": "transparent", "output_format": "jpeg"}) == [
        "background: transparent needs output_format png or webp (jpeg is set)"
    ]
    assert combination_problems({"output_compression": 50}) == [
        "output_compression: applies to output_format jpeg or webp only (png is set)"
    ]

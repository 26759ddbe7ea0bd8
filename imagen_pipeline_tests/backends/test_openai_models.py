"""gpt-image-2's request rules, which names it covers, and the retired models' table."""

from __future__ import annotations

import pytest

from imagen_pipeline.backends.openai.models import (
    combination_problems,
    fitting_size,
    model_family,
    parameter_problem,
    retired_openai_model,
    size_problems,
)
from imagen_pipeline.backends.retired import RETIRED_MODELS, retirement_message


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-image-2", "gpt-image-2"),
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
        ("gpt-image-2.6-flare", None),
        ("gpt-image-1", None),
    ],
)
def test_known_names_and_their_dated_snapshots_have_a_family(
    model: str, family: str | None
) -> None:
    assert model_family(model) == family


@pytest.mark.parametrize(
    ("size", "problems"),
    [
        ("auto", []),
        ("1024x1024", []),
        ("3840x2160", []),
        ("3840x1280", []),
        ("816x816", []),
        ("1008x1000", ["size 1008x1000: both edges must be multiples of 16"]),
        ("3840x1264", ["size 3840x1264: the aspect ratio may be at most 3:1"]),
        ("800x800", ["size 800x800: 640,000 pixels; allowed 655,360 to 8,294,400"]),
        (
            "3856x1296",
            [
                "size 3856x1296: the longest edge may be at most 3,840",
            ],
        ),
        (
            "2896x2896",
            ["size 2896x2896: 8,386,816 pixels; allowed 655,360 to 8,294,400"],
        ),
        ("1024", ["size: '1024' is not auto or WIDTHxHEIGHT (such as 1536x1024)"]),
        (
            "0x1024",
            [
                "size 0x1024: the aspect ratio may be at most 3:1",
                "size 0x1024: 0 pixels; allowed 655,360 to 8,294,400",
            ],
        ),
    ],
)
def test_each_size_rule_is_named_when_broken(size: str, problems: list[str]) -> None:
    assert size_problems(size) == problems


@pytest.mark.parametrize(
    ("width", "height"),
    [(64, 64), (512, 512), (1920, 1080), (4000, 1000), (1000, 4000), (8000, 8000), (5, 7000)],
)
def test_the_fitting_size_obeys_every_rule_and_keeps_the_aspect_ratio_close(
    width: int, height: int
) -> None:
    size = fitting_size(width, height)
    assert size_problems(size) == []
    sent_w, sent_h = (int(part) for part in size.split("x"))
    wanted = min(3.0, max(1 / 3, width / height))
    assert abs(sent_w / sent_h - wanted) / wanted < 0.04


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("quality", "high", None),
        (
            "quality",
            "hd",
            "quality: 'hd' is not offered by gpt-image-2; allowed values: low, medium, high, auto",
        ),
        (
            "background",
            "transparent",
            "background: 'transparent' is refused: gpt-image-2 no longer renders transparent "
            "backgrounds (withdrawn by OpenAI on 2026-09-30); allowed values: opaque, auto",
        ),
        ("background", "opaque", None),
        ("moderation", "low", None),
        ("output_format", "webp", None),
        ("output_compression", 80, None),
        ("output_compression", True, "output_compression: True is not an integer from 0 to 100"),
        ("size", "1536x1024", None),
        ("size", 1536, "size: must be a string such as 1536x1024 or auto (got 1536)"),
        ("user", 7, "user: must be a string (got 7)"),
        (
            "style",
            "vivid",
            "style: not a parameter of gpt-image-2; parameters: background, moderation, "
            "output_compression, output_format, quality, size, user",
        ),
    ],
)
def test_parameters_are_checked_against_gpt_image_2(
    name: str, value: object, problem: str | None
) -> None:
    assert parameter_problem("gpt-image-2", "gpt-image-2", name, value) == problem


def test_a_model_with_borrowed_rules_is_named_with_them() -> None:
    assert parameter_problem("gpt-image-2", "gpt-image-2.6-flare", "quality", "xhigh") == (
        "quality: 'xhigh' is not offered by gpt-image-2.6-flare (gpt-image-2 rules); "
        "allowed values: low, medium, high, auto"
    )


def test_compression_needs_a_lossy_output_format() -> None:
    assert combination_problems({"output_compression": 50, "output_format": "webp"}) == []
    assert combination_problems({"output_compression": 50}) == [
        "output_compression: applies to output_format jpeg or webp only (png is set)"
    ]


def test_every_model_the_adapter_knew_is_retired_with_its_date_and_replacement() -> None:
    retired = {model.model: model.shutdown.isoformat() for model in RETIRED_MODELS}
    assert retired == {
        "dall-e-2": "2026-05-12",
        "dall-e-3": "2026-05-12",
        "gpt-image-1": "2026-10-23",
        "gpt-image-1-mini": "2026-12-01",
        "gpt-image-1.5": "2026-12-01",
        "chatgpt-image-latest": "2026-12-01",
    }
    snapshot = retired_openai_model("gpt-image-1-2025-04-15")
    assert snapshot is not None
    assert retirement_message(snapshot, "gpt-image-1-2025-04-15") == (
        "gpt-image-1-2025-04-15 (a snapshot of gpt-image-1) was shut down by OpenAI on "
        "2026-10-23; use gpt-image-2 instead"
    )
    assert retired_openai_model("gpt-image-2") is None

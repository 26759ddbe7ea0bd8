"""Validation and defaults when turning a request into a plan."""

from __future__ import annotations

import pytest

from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline.generate.planning import ImageSpec, parse_size, plan_generation
from imagen_pipeline.generate.setup import parse_setup

CONFIG = parse_setup(
    {
        "default_backend": "fast",
        "backends": {"fast": {"type": "mock"}, "slow": {"type": "mock", "model": "slow-v2"}},
    }
)


def test_defaults_come_from_style_then_global() -> None:
    plan = plan_generation(ImageSpec(prompt="a boat", style="blog-header"), CONFIG)
    assert plan.backend == "fast"
    assert plan.backend_type == "mock"
    assert (plan.request.width, plan.request.height) == (1344, 768)
    assert plan.request.prompt.startswith("a boat, wide editorial header image")
    assert plan.request.negative.startswith("text, letters")
    square = plan_generation(ImageSpec(prompt="a boat"), CONFIG)
    assert (square.request.width, square.request.height) == (1024, 1024)


def test_explicit_values_win_and_backend_is_bound() -> None:
    plan = plan_generation(
        ImageSpec(
            prompt="a boat",
            style="cinematic",
            backend="slow",
            width=512,
            height=256,
            steps=9,
            seed=3,
        ),
        CONFIG,
    )
    assert (plan.request.width, plan.request.height, plan.request.steps, plan.request.seed) == (
        512,
        256,
        9,
        3,
    )
    assert plan.model == "slow-v2"


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"prompt": "  "}, "prompt", "must not be empty"),
        ({"prompt": "a\x00b"}, "prompt", "control characters"),
        ({"prompt": "x" * 9000}, "prompt", "at most 8000 characters"),
        ({"prompt": "x", "style": "nope"}, "style", "known styles: blog-header"),
        ({"prompt": "x", "backend": "gpu"}, "backend", "configured backends: fast, slow"),
        (
            {"prompt": "x", "width": 1001},
            "width",
            "between 64 and 4096 and a multiple of 8 (got 1001)",
        ),
        ({"prompt": "x", "height": 8192}, "height", "between 64 and 4096"),
        ({"prompt": "x", "steps": 0}, "steps", "between 1 and 200 (got 0)"),
        ({"prompt": "x", "seed": -1}, "seed", "between 0 and 4294967295 (got -1)"),
    ],
)
def test_bad_fields_name_the_field_and_allowed_values(spec: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        plan_generation(ImageSpec(**spec), CONFIG)
    assert error.value.field == field
    assert message in str(error.value)
    assert str(error.value).startswith(f"{field}: ")


def test_parse_size() -> None:
    assert parse_size("1024x768") == (1024, 768)
    assert parse_size("640 X 480") == (640, 480)
    with pytest.raises(InvalidRequestError, match="size: expected WIDTHxHEIGHT such as 1024x1024"):
        parse_size("big")


CLIENT_CONFIG = {
    "default_backend": "gpu",
    "backends": {
        "gpu": {
            "type": "comfyui",
            "url": "http://127.0.0.1:1",
            "fallback": ["cloud"],
            "client_options": {"17.scheduler": {"choices": ["simple", "karras"]}},
        },
        "cloud": {"type": "mock", "client_options": {"strength": {"min": 0, "max": 1}}},
    },
}


def test_a_client_request_is_held_to_the_allow_list_and_the_operators_is_not() -> None:
    config = parse_setup(CLIENT_CONFIG)
    opts = {"17.denoise": 0.5}
    with pytest.raises(InvalidRequestError) as raised:
        plan_generation(ImageSpec(prompt="a fox", backend_opts=opts, job_id=7), config)
    assert raised.value.public == (
        "backend_opts.17.denoise: is not an option a client may set here; allowed: "
        "17.scheduler (one of simple, karras)"
    )
    operator = plan_generation(ImageSpec(prompt="a fox", backend_opts=opts), config)
    assert operator.request.backend_opts == opts


def test_a_fallback_keeps_the_options_it_takes_from_the_same_requester() -> None:
    config = parse_setup(CLIENT_CONFIG)
    spec = ImageSpec(prompt="a fox", backend_opts={"17.scheduler": "karras"}, job_id=7)
    plan = plan_generation(spec, config)
    fallen = plan.falling_back(plan.fallbacks[0], "1 server unreachable")
    assert fallen.request.backend_opts == {}
    assert fallen.fallback_reason == (
        "fell back from gpu: 1 server unreachable; options cloud does not take were left "
        "out: 17.scheduler"
    )
    operator = plan_generation(spec.model_copy(update={"job_id": None}), config)
    kept = operator.falling_back(operator.fallbacks[0], "1 server unreachable")
    assert kept.request.backend_opts == {"17.scheduler": "karras"}, "the mock takes anything"

"""Which model a Replicate block names: the accepted forms, their API paths and prices."""

from __future__ import annotations

import pytest

from imagen_pipeline.backends.replicate.models import (
    ModelRef,
    image_price,
    parse_model_ref,
    resolve_input_style,
)

VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"


@pytest.mark.parametrize(
    ("value", "ref", "create_path", "check_path"),
    [
        pytest.param(
            "black-forest-labs/flux-schnell",
            ModelRef("black-forest-labs/flux-schnell", None),
            "/models/black-forest-labs/flux-schnell/predictions",
            "/models/black-forest-labs/flux-schnell",
            id="official-model",
        ),
        pytest.param(
            f"stability-ai/sdxl:{VERSION}",
            ModelRef("stability-ai/sdxl", VERSION),
            "/predictions",
            f"/models/stability-ai/sdxl/versions/{VERSION}",
            id="model-version",
        ),
        pytest.param(
            f" {VERSION} ", ModelRef(None, VERSION), "/predictions", "/account", id="bare-version"
        ),
    ],
)
def test_each_accepted_form_has_its_create_and_check_path(
    value: str, ref: ModelRef, create_path: str, check_path: str
) -> None:
    parsed = parse_model_ref(value)
    assert parsed == ref
    assert (parsed.create_path, parsed.check_path) == (create_path, check_path)


@pytest.mark.parametrize(
    "value", ["flux-schnell", "a/b/c", "owner/name:latest", f"owner/name:{VERSION[:40]}"]
)
def test_other_forms_are_refused_naming_the_accepted_ones(value: str) -> None:
    with pytest.raises(ValueError, match=r"^expected an official model 'owner/name'"):
        parse_model_ref(value)


def test_auto_style_comes_from_the_model_name() -> None:
    def style(value: str) -> str:
        return resolve_input_style(parse_model_ref(value), "auto")

    assert style("black-forest-labs/flux-schnell") == "flux-schnell"
    assert style("black-forest-labs/flux-dev") == "flux-dev"
    assert style("black-forest-labs/flux-1.1-pro") == "flux-pro"
    assert style("black-forest-labs/flux-2-pro") == "flux-2"
    assert style("black-forest-labs/flux-2-flex") == "flux-2"
    assert style("black-forest-labs/flux-2-max") == "flux-2"
    assert style("black-forest-labs/flux-2-klein-4b") == "generic"
    assert style(f"stability-ai/sdxl:{VERSION}") == "generic"
    assert resolve_input_style(parse_model_ref(VERSION), "flux-dev") == "flux-dev"


def test_prices_by_the_whole_value_then_owner_name_then_version_id_else_unknown() -> None:
    def price(model: str, prices: dict[str, float]) -> tuple[float | None, str]:
        found = image_price(model, prices)
        return found.usd, found.source

    versioned = f"black-forest-labs/flux-dev:{VERSION}"
    assert price("black-forest-labs/flux-dev", {}) == (0.025, "built_in")
    assert price(versioned, {}) == (0.025, "built_in"), "the owner/name of a version"
    assert price(versioned, {versioned: 0.7}) == (0.7, "config")
    assert price(f"someone/model:{VERSION}", {VERSION: 0.5}) == (0.5, "config")
    assert price(VERSION, {VERSION: 0.5}) == (0.5, "config")
    assert price("someone/unknown", {}) == (None, "unknown")
    assert image_price("black-forest-labs/flux-schnell", {}).note == (
        "built-in table (replicate.com/pricing, read 2026-10-07)"
    )

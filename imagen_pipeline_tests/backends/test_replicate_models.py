"""Which model a Replicate block names: the accepted forms, their API paths and prices."""

from __future__ import annotations

import pytest

from imagen_pipeline.backends.replicate.models import (
    ModelRef,
    parse_model_ref,
    price_usd,
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
    assert style(f"stability-ai/sdxl:{VERSION}") == "generic"
    assert resolve_input_style(parse_model_ref(VERSION), "flux-dev") == "flux-dev"


def test_prices_by_the_whole_value_then_owner_name_then_version_id_else_zero() -> None:
    versioned = f"black-forest-labs/flux-dev:{VERSION}"
    assert price_usd("black-forest-labs/flux-dev", {}) == 0.025
    assert price_usd(versioned, {}) == 0.025, "the owner/name of a version"
    assert price_usd(versioned, {versioned: 0.7}) == 0.7
    assert price_usd(f"someone/model:{VERSION}", {VERSION: 0.5}) == 0.5
    assert price_usd(VERSION, {VERSION: 0.5}) == 0.5
    assert price_usd("someone/unknown", {}) == 0.0

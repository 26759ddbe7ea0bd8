"""Helpers of the backend contract: the seed a run derives, the check of image bytes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagen_pipeline.backends.contract import (
    MAX_SEED,
    GenerationContext,
    derived_seed,
    verify_image,
)
from imagen_pipeline.errors import PermanentBackendError


def encoded(image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format=image_format)
    return buffer.getvalue()


def test_derived_seed_is_fixed_per_run_and_instance_and_never_zero() -> None:
    seed = derived_seed(GenerationContext(run_id="run-a", attempt=0, instance_name="gpu"))
    assert seed == derived_seed(GenerationContext(run_id="run-a", attempt=2, instance_name="gpu"))
    assert seed != derived_seed(GenerationContext(run_id="run-b", instance_name="gpu"))
    assert seed != derived_seed(GenerationContext(run_id="run-a", instance_name="flux"))
    seeds = {derived_seed(GenerationContext(run_id=f"run-{n}")) for n in range(200)}
    assert all(1 <= value <= MAX_SEED for value in seeds)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_whole_images_pass(image_format: str) -> None:
    verify_image(encoded(image_format), "Test output")


@pytest.mark.parametrize(
    "data", [b"<html>Bad gateway</html>", encoded("PNG")[:40]], ids=["html", "truncated png"]
)
def test_what_is_not_a_whole_image_is_permanent_and_names_the_source(data: bytes) -> None:
    with pytest.raises(PermanentBackendError, match=r"^Replicate output is not an image: "):
        verify_image(data, "Replicate output")

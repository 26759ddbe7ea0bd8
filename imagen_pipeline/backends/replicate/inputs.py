"""A generation request as the input of a Replicate model, per input style; source images
go in as data URIs, or (1MB and more) as the ``urls.get`` of a file uploaded to Replicate's
Files API: never a URL of the user's image."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imagen_pipeline.backends.contract import GenerationRequest
from imagen_pipeline.backends.replicate.models import (
    DATA_URI_ADVISED_BYTES,
    SOURCE_INPUTS,
    InputStyle,
)
from imagen_pipeline.backends.sources import SourceImage

FLUX_ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
"""FLUX schnell/dev ``aspect_ratio`` choices and the 1-megapixel size each renders."""

QUARTER_MEGAPIXEL_MAX_AREA = 512 * 1024
"""Requests up to this many pixels use ``megapixels: "0.25"`` (half width and height)."""

FLUX_STEPS: dict[str, tuple[int, int]] = {"flux-schnell": (4, 4), "flux-dev": (50, 28)}
"""Style -> (largest ``num_inference_steps`` accepted, the model's default)."""

CUSTOM_SIZE_LIMITS: dict[str, tuple[int, int, int]] = {
    "flux-pro": (256, 1440, 32),
    "flux-2": (256, 2048, 32),
}
"""Style -> (smallest side, largest side, multiple) of ``aspect_ratio: custom`` sizes, from
the models' input schemas on Replicate (FLUX1.1 pro; FLUX.2 pro, flex and max), read
2026-12-02. The server rounds other sizes; sending fitting ones keeps the sidecar true."""


SIZE = ("width and height", "the image size")
RESERVED_INPUTS: dict[str, tuple[str, str]] = {
    "prompt": ("prompt", ""),
    "negative_prompt": ("negative", "the negative prompt"),
    "seed": ("seed", ""),
    "width": ("width", ""),
    "height": ("height", ""),
    "aspect_ratio": SIZE,
    "megapixels": SIZE,
    "resolution": SIZE,
    "num_inference_steps": ("steps", ""),
    "num_outputs": ("count", "how many images one prediction makes"),
    "num_images": ("count", "how many images one prediction makes"),
    "number_of_images": ("count", "how many images one prediction makes"),
    "batch_size": ("count", "how many images one prediction makes"),
    "input_image": ("source_images", "the source image"),
    "input_images": ("source_images", "the source images"),
}
"""Model inputs that carry a request field (on FLUX and the generic ``width``/``height``
models), with the field: no option and no ``extra_input`` sets them."""


def flux_size(width: int, height: int) -> tuple[dict[str, str], tuple[int, int]]:
    """FLUX schnell/dev inputs closest to ``width`` x ``height``, and the size they render."""
    ratio = closest_ratio(width, height)
    out_width, out_height = FLUX_ASPECT_RATIOS[ratio]
    fields = {"aspect_ratio": ratio}
    if width * height <= QUARTER_MEGAPIXEL_MAX_AREA:
        fields["megapixels"] = "0.25"
        out_width, out_height = out_width // 2, out_height // 2
    return fields, (out_width, out_height)


def custom_size(style: str, width: int, height: int) -> tuple[int, int]:
    """``width``/``height`` for ``aspect_ratio: custom`` within the style's limits."""
    low, high, multiple = CUSTOM_SIZE_LIMITS[style]
    scale = min(1.0, high / max(width, height))
    scale = max(scale, low / min(width, height))

    def fit(side: int) -> int:
        rounded = round(side * scale / multiple) * multiple
        return min(high, max(low, rounded))

    return fit(width), fit(height)


def data_uri(source: SourceImage) -> str:
    """The checked file as ``data:<mime>;base64,...``."""
    encoded = base64.b64encode(Path(source.path).read_bytes()).decode()
    return f"data:{source.mime};base64,{encoded}"


def closest_ratio(width: int, height: int) -> str:
    """The FLUX ``aspect_ratio`` choice closest to ``width`` x ``height``."""
    target = math.log(width / height)
    return min(
        FLUX_ASPECT_RATIOS,
        key=lambda key: abs(
            math.log(FLUX_ASPECT_RATIOS[key][0] / FLUX_ASPECT_RATIOS[key][1]) - target
        ),
    )


def needs_upload(source: SourceImage) -> bool:
    """Whether ``source`` goes through the Files API (1MB or more) instead of a data URI."""
    return source.bytes >= DATA_URI_ADVISED_BYTES


def add_sources(
    data: dict[str, Any],
    request: GenerationRequest,
    style: InputStyle,
    file_urls: Mapping[int, str],
) -> None:
    """The request's source images in the style's input: ``input_image`` (one) or
    ``input_images`` (a list), each its uploaded file's URL (``file_urls`` by position)
    or a data URI."""
    if not request.sources:
        return
    values = [file_urls.get(source.position) or data_uri(source) for source in request.sources]
    data[SOURCE_INPUTS[style]] = values[0] if style == "flux-kontext" else values


def build_input(
    request: GenerationRequest,
    *,
    seed: int,
    style: InputStyle,
    output_format: str,
    guidance: float | None,
    log: Any,
    file_urls: Mapping[int, str],
) -> tuple[dict[str, Any], int | None]:
    """The prediction ``input`` for ``request`` and the steps the model will run (if known).

    ``file_urls`` holds the ``urls.get`` of each source uploaded to the Files API, by
    position. Fields a model has no input for are left out and logged as ignored.
    """
    data: dict[str, Any] = {"prompt": request.prompt}
    steps = request.steps
    size = f"{request.width}x{request.height}"
    if style in FLUX_STEPS:
        fields, rendered = flux_size(request.width, request.height)
        data.update(fields)
        if rendered != (request.width, request.height):
            log.info(
                f"Replicate {style} renders fixed sizes: {size} requested, sending "
                f"{', '.join(f'{k} {v}' for k, v in fields.items())} "
                f"({rendered[0]}x{rendered[1]})"
            )
        most, default = FLUX_STEPS[style]
        if steps is None:
            steps = default
        else:
            if steps > most:
                log.warning(f"Replicate {style} accepts at most {most} steps; sending {most}")
                steps = most
            data["num_inference_steps"] = steps
    elif style == "flux-kontext":
        data["aspect_ratio"] = closest_ratio(request.width, request.height)
        log.info(
            f"Replicate {style} renders about 1 megapixel: {size} requested, sending "
            f"aspect_ratio {data['aspect_ratio']}"
        )
        if steps is not None:
            log.info(f"Replicate {style} has no steps input; ignored the requested steps")
            steps = None
    elif style in CUSTOM_SIZE_LIMITS:
        width, height = custom_size(style, request.width, request.height)
        data.update(aspect_ratio="custom", width=width, height=height)
        if (width, height) != (request.width, request.height):
            log.info(f"Replicate {style}: {size} requested, sending {width}x{height}")
        if steps is not None:
            log.info(f"Replicate {style} has no steps input; ignored the requested steps")
            steps = None
    else:
        data.update(width=request.width, height=request.height)
        if steps is not None:
            data["num_inference_steps"] = steps
        if request.negative:
            data["negative_prompt"] = request.negative
    if style != "generic":
        data["output_format"] = output_format
        if request.negative:
            log.info(f"Replicate {style} has no negative prompt input; ignored the negative prompt")
        if seed == 0:
            log.warning("FLUX on Replicate treats seed 0 as random; the image is not reproducible")
    if guidance is not None:
        if style == "flux-dev":
            data["guidance"] = guidance
        else:
            log.info(f"Replicate {style}: guidance applies to flux-dev only; ignored")
    data["seed"] = seed
    if style in SOURCE_INPUTS:
        add_sources(data, request, style, file_urls)
    return data, steps


def recorded_input(
    data: dict[str, Any], request: GenerationRequest, file_urls: Mapping[int, str]
) -> dict[str, Any]:
    """``data`` as the sidecar records it: each source image replaced by what it holds (its
    sha256, MIME type and size) and how it went (data URI or uploaded file), not megabytes
    of base64."""

    def describe(source: SourceImage) -> str:
        url = file_urls.get(source.position)
        how = f"Replicate file {url}" if url else "data URI"
        return (
            f"{how} of source {source.position} ({source.mime}, {source.bytes} bytes, "
            f"sha256 {source.sha256})"
        )

    recorded = dict(data)
    for key in SOURCE_INPUTS.values():
        if key in recorded and request.sources:
            described = [describe(source) for source in request.sources]
            recorded[key] = described if isinstance(recorded[key], list) else described[0]
    return recorded

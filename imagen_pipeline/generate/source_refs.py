"""How a request names its source images: ``source_images`` (and a ``mask``) hold
``imagen.images`` ids (digits) or, in the operator's requests only, absolute paths of local
files; ``mode`` and ``strength`` say what to do with them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from imagen_pipeline.backends.sources import SOURCE_MODES
from imagen_pipeline.errors import InvalidRequestError

MAX_SOURCE_IMAGES = 16
"""Most source images one request may name (``imagen.jobs`` ``jobs_source_images_check``);
each backend takes at most its own number (``SourceSupport.max_images``)."""
MAX_IMAGE_ID = 2**63 - 1
_IMAGE_ID = re.compile(r"^[1-9][0-9]{0,18}$")


@dataclass(frozen=True)
class SourceRef:
    """One source a request names: an image row's id, or a local file (operator only)."""

    field: str
    """``source_images[0]`` or ``mask``: what an error names."""
    position: int
    role: Literal["source", "mask"]
    image_id: int | None = None
    path: str | None = None


def parse_reference(
    field: str, value: str, position: int, role: Literal["source", "mask"], *, from_client: bool
) -> SourceRef:
    """``"12"`` -> image 12; ``"/abs/cat.png"`` -> that file (the operator's requests only)."""
    text = value.strip()
    if _IMAGE_ID.match(text) and int(text) <= MAX_IMAGE_ID:
        return SourceRef(field, position, role, image_id=int(text))
    if from_client:
        raise InvalidRequestError(field, "name one of your images by its id (a positive number)")
    if not text or "\x00" in text or not Path(text).is_absolute():
        raise InvalidRequestError(
            field, f"expected an imagen.images id or an absolute file path (got {value!r})"
        )
    return SourceRef(field, position, role, path=text)


def source_references(images: list[str], mask: str | None, *, from_client: bool) -> list[SourceRef]:
    """The request's sources in order, then its mask; raises for a malformed entry."""
    if len(images) > MAX_SOURCE_IMAGES:
        raise InvalidRequestError(
            "source_images", f"names {len(images)} images; at most {MAX_SOURCE_IMAGES}"
        )
    refs = [
        parse_reference(f"source_images[{n}]", value, n, "source", from_client=from_client)
        for n, value in enumerate(images)
    ]
    if mask is not None:
        refs.append(parse_reference("mask", mask, 0, "mask", from_client=from_client))
    return refs


def check_source_fields(
    images: list[str],
    mask: str | None,
    mode: str | None,
    strength: float | None,
    *,
    from_client: bool,
) -> None:
    """Raise :class:`InvalidRequestError` for a malformed source field (what a backend
    takes is checked against its :class:`~imagen_pipeline.backends.sources.SourceSupport`)."""
    source_references(images, mask, from_client=from_client)
    if mode is not None and mode not in SOURCE_MODES:
        raise InvalidRequestError(
            "mode", f"must be one of {', '.join(SOURCE_MODES)} (got {mode!r})"
        )
    if strength is not None and not 0 <= strength <= 1:
        raise InvalidRequestError("strength", f"must be between 0 and 1 (got {strength:g})")
    if mask is not None and not images:
        raise InvalidRequestError(
            "mask", "is only used with source images (source_images is empty)"
        )

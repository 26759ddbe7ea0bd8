"""Source images: what a request sends a backend besides text, and what each backend takes.

A request may name images to start from (an edit, an image-to-image pass, an optional
mask). The pipeline fetches and checks them itself
(:mod:`imagen_pipeline.generate.sources`); an adapter receives them as
:class:`SourceImage` values (a checked local copy with its sha256) and says what it takes
with a :class:`SourceSupport`, so a request it cannot serve is refused before any call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SourceMode = Literal["edit", "img2img"]
"""``edit``: the prompt says what to change; ``img2img``: re-render with a ``strength``."""
SOURCE_MODES: tuple[SourceMode, ...] = ("edit", "img2img")
SOURCE_FORMATS = ("PNG", "JPEG", "WEBP")
"""Formats a source image may have (Pillow's names)."""
MAX_SOURCE_BYTES = 25 * 1024 * 1024
"""Largest source file the pipeline sends any backend (an adapter may allow less)."""
MAX_SOURCE_PIXELS = 4096 * 4096
"""Most pixels a source image may have: checked from its header before it is decoded."""


class SourceImage(BaseModel):
    """One checked source image: a local copy an adapter reads, and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    position: int = Field(description="Its place in the request's source_images, from 0.")
    role: Literal["source", "mask"] = "source"
    path: str = Field(description="The checked copy the adapter reads (in the staging folder).")
    origin: str = Field(description="Where it came from: an image row, a file, an object.")
    sha256: str
    mime: str
    bytes: int
    width: int
    height: int
    image_id: int | None = Field(default=None, description="Its imagen.images row, if any.")
    run_id: str | None = Field(default=None, description="The Dagster run that made it, if any.")


@dataclass(frozen=True)
class SourceSupport:
    """What a backend takes besides text: how many source images, which modes, a mask, and
    its own limits (never above the pipeline's)."""

    max_images: int = 0
    modes: tuple[SourceMode, ...] = ()
    default_mode: SourceMode | None = None
    mask: bool = False
    max_bytes: int = MAX_SOURCE_BYTES
    max_pixels: int = MAX_SOURCE_PIXELS
    formats: tuple[str, ...] = SOURCE_FORMATS

    def describe(self) -> str:
        """``takes no source images`` or ``takes up to 4 source images (modes edit,
        img2img; a mask)``."""
        if not self.max_images:
            return "takes no source images"
        plural = "s" if self.max_images > 1 else ""
        extras = []
        if self.modes:
            extras.append("modes " + ", ".join(self.modes))
        extras.append("a mask" if self.mask else "no mask")
        return f"takes up to {self.max_images} source image{plural} ({'; '.join(extras)})"

    def refusal(
        self,
        backend: str,
        images: int,
        mode: SourceMode | None,
        strength: float | None,
        mask: bool,
    ) -> tuple[str, str] | None:
        """The field and why ``backend`` cannot take a request with ``images`` source
        images, this ``mode``, ``strength`` and ``mask``; None when it can."""
        if not images:
            for field, given in (("mode", mode), ("strength", strength), ("mask", mask)):
                if given not in (None, False):
                    return field, "is only used with source images (source_images is empty)"
            return None
        where = f"backend {backend!r} {self.describe()}"
        if images > self.max_images:
            return "source_images", f"names {images} image{'s' if images > 1 else ''}; {where}"
        effective = mode or self.default_mode
        if mode is not None and mode not in self.modes:
            return "mode", f"{mode!r} is not available; {where}"
        if mask and not self.mask:
            return "mask", f"is not available; {where}"
        if strength is not None and effective != "img2img":
            return "strength", "applies to mode img2img only"
        return None

    def image_refusal(self, backend: str, source: SourceImage) -> str | None:
        """Why ``backend`` cannot take this checked image (format, bytes, pixels), or None."""
        fmt = source.mime.removeprefix("image/").upper().replace("JPG", "JPEG")
        if fmt not in self.formats:
            return f"is {fmt}; backend {backend!r} takes {', '.join(self.formats)}"
        if source.bytes > self.max_bytes:
            return f"is {source.bytes} bytes; backend {backend!r} takes at most {self.max_bytes}"
        if source.width * source.height > self.max_pixels:
            return (
                f"is {source.width}x{source.height} pixels; backend {backend!r} takes at most "
                f"{self.max_pixels} pixels"
            )
        return None


NO_SOURCES = SourceSupport()
"""A backend that takes text only."""

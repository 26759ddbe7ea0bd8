"""A request's source images: how they are named, checked and staged for a backend.

A request names its sources in ``source_images`` (and a ``mask``;
:mod:`imagen_pipeline.generate.source_refs`). The generate step fetches each one itself
(:mod:`imagen_pipeline.generate.source_fetch`: the local output folder, else Supabase
Storage with the service key; never a URL a client gives), and every byte string is checked
here before anything is sent: its size, then its format and pixel count from the header (so
a decompression bomb is refused before it is decoded), then Pillow's verify and a full
decode. The checked copy is staged next to the run's staged image, recorded with its
sha256, and removed when the step ends.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imagen_pipeline.atomic_files import remove_if_empty, write_atomic
from imagen_pipeline.backends.contract import GenerationRequest
from imagen_pipeline.backends.sources import (
    MAX_SOURCE_BYTES,
    MAX_SOURCE_PIXELS,
    SOURCE_FORMATS,
    SourceImage,
)
from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline.generate.source_refs import SourceRef
from imagen_pipeline.generate.staging import EXTENSIONS, MIME_TYPES, staging_dir


@dataclass(frozen=True)
class CheckedImage:
    """What the checks learnt of a source's bytes."""

    format: str
    width: int
    height: int
    sha256: str
    bytes: int
    run_id: str | None
    """The generating run a PNG's ``imagen.run_id`` text chunk names, if any."""


def check_size(field: str, size: int) -> None:
    """Refuse a source of more than :data:`MAX_SOURCE_BYTES` before reading it."""
    if size > MAX_SOURCE_BYTES:
        raise InvalidRequestError(
            field, f"is {size} bytes; a source image may have at most {MAX_SOURCE_BYTES} bytes"
        )


def check_source_bytes(field: str, data: bytes) -> CheckedImage:
    """Check a source before it is sent: byte limit, format (PNG, JPEG, WEBP) and pixel
    limit from the header, then Pillow's verify and a full decode."""
    check_size(field, len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format or "unknown"
                width, height = image.size
                if fmt not in SOURCE_FORMATS:
                    raise InvalidRequestError(
                        field, f"is a {fmt} image; allowed formats: {', '.join(SOURCE_FORMATS)}"
                    )
                if width * height > MAX_SOURCE_PIXELS:
                    raise InvalidRequestError(field, _too_many(width, height))
                image.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                text = dict(getattr(image, "text", {}) or {})
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequestError(field, _too_many(None, None)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InvalidRequestError(field, f"is not a whole image ({error})") from None
    run_id = text.get("imagen.run_id")
    return CheckedImage(
        format=fmt,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        run_id=run_id if isinstance(run_id, str) and run_id else None,
    )


def _too_many(width: int | None, height: int | None) -> str:
    size = f"is {width}x{height} pixels" if width else "has too many pixels"
    return f"{size}; a source image may have at most {MAX_SOURCE_PIXELS} pixels (4096x4096)"


def read_local_file(field: str, path: Path) -> bytes:
    """A local file's bytes, refused when it is missing or over the byte limit (checked
    before reading)."""
    try:
        size = path.stat().st_size
    except OSError:
        raise InvalidRequestError(field, f"no readable file at {path}") from None
    if not path.is_file():
        raise InvalidRequestError(field, f"{path} is not a file")
    check_size(field, size)
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidRequestError(field, f"cannot read {path}: {error.strerror}") from None


def stage_source(
    ref: SourceRef,
    data: bytes,
    checked: CheckedImage,
    origin: str,
    output_dir: Path,
    run_id: str,
    *,
    image_id: int | None = None,
    parent_run_id: str | None = None,
) -> SourceImage:
    """Write the checked bytes to the staging folder (what the adapter reads, so the file
    it sends is the one checked) and describe them."""
    suffix = "mask" if ref.role == "mask" else f"source{ref.position}"
    path = staging_dir(output_dir) / f"{run_id}-{suffix}{EXTENSIONS[checked.format]}"
    write_atomic(path, data)
    return SourceImage(
        position=ref.position,
        role=ref.role,
        path=str(path),
        origin=origin,
        sha256=checked.sha256,
        mime=MIME_TYPES[checked.format],
        bytes=checked.bytes,
        width=checked.width,
        height=checked.height,
        image_id=image_id,
        run_id=parent_run_id or checked.run_id,
    )


def discard_sources(request: GenerationRequest) -> None:
    """Remove the staged copies of a request's sources (and the staging folder if empty)."""
    staged = [*request.sources, *([request.mask] if request.mask else [])]
    for source in staged:
        Path(source.path).unlink(missing_ok=True)
    if staged:
        remove_if_empty(Path(staged[0].path).parent)

"""Small inline previews for the Dagster UI (markdown with a data URI)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

PREVIEW_MAX_PX = 256


def preview_markdown(path: Path, max_px: int = PREVIEW_MAX_PX) -> str:
    """Markdown image of a JPEG thumbnail of ``path`` (a few KB), for materialization metadata."""
    with Image.open(path) as image:
        thumbnail = image.convert("RGB")
        thumbnail.thumbnail((max_px, max_px))
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="JPEG", quality=70)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![preview](data:image/jpeg;base64,{encoded})"

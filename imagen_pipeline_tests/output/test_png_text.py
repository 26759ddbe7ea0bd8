"""PNG text chunks are inserted without touching pixel data."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagen_pipeline.output.png_text import add_text_chunks


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 16), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_chunks_are_readable_and_pixels_unchanged() -> None:
    original = png_bytes()
    tagged = add_text_chunks(original, {"imagen.prompt": "Käse 猫", "imagen.seed": "42"})
    with Image.open(io.BytesIO(tagged)) as image:
        image.load()
        assert image.text["imagen.prompt"] == "Käse 猫"
        assert image.text["imagen.seed"] == "42"
        assert image.tobytes() == Image.open(io.BytesIO(original)).tobytes()


def test_non_png_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        add_text_chunks(b"\xff\xd8\xff\xe0 jpeg", {"a": "b"})


def test_invalid_keyword_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid PNG text keyword"):
        add_text_chunks(png_bytes(), {"k" * 80: "v"})

"""Source images named, checked and matched against what a backend takes, before any call."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from imagen_pipeline.backends.mock import MockBackend
from imagen_pipeline.backends.sources import MAX_SOURCE_BYTES, SourceSupport
from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline.generate.planning import ImageSpec, plan_generation
from imagen_pipeline.generate.setup import load_setup
from imagen_pipeline.generate.source_refs import parse_reference, source_references
from imagen_pipeline.generate.sources import check_source_bytes, read_local_file


def png(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's
    shape: small file, huge image)."""
    data = png(size=(1, 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:8] + patched + data[8 + 25 :]


def test_a_checked_source_has_its_format_size_and_sha256() -> None:
    checked = check_source_bytes("source_images[0]", png())
    assert (checked.format, checked.width, checked.height) == ("PNG", 64, 64)
    assert len(checked.sha256) == 64 and checked.bytes == len(png())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bomb_png(30000, 30000), r"source_images\[0\]: .*at most 16777216 pixels"),
        (bomb_png(5000, 4000), r"is 5000x4000 pixels; a source image may have at most"),
        (b"GIF89a" + png()[6:], r"is not a whole image|allowed formats"),
        (b"not an image at all", r"is not a whole image"),
        (png()[:-30], r"is not a whole image"),
    ],
    ids=["bomb", "too-many-pixels", "gif-header", "text", "truncated"],
)
def test_a_bad_source_is_refused_naming_the_field_and_the_limit(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_source_bytes("source_images[0]", data)


def test_a_gif_is_refused_by_format() -> None:
    buffer = io.BytesIO()
    Image.new("P", (8, 8)).save(buffer, format="GIF")
    with pytest.raises(InvalidRequestError, match="is a GIF image; allowed formats: PNG, JPEG"):
        check_source_bytes("mask", buffer.getvalue())


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.truncate(MAX_SOURCE_BYTES + 1)
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_SOURCE_BYTES} bytes"):
        read_local_file("source_images[1]", big)


def test_references_are_ids_or_the_operators_absolute_paths() -> None:
    assert parse_reference("f", "12", 0, "source", from_client=True).image_id == 12
    assert parse_reference("f", "/srv/a.png", 0, "source", from_client=False).path == "/srv/a.png"
    with pytest.raises(InvalidRequestError, match="name one of your images by its id"):
        parse_reference("source_images[0]", "/etc/passwd", 0, "source", from_client=True)
    with pytest.raises(InvalidRequestError, match="absolute file path"):
        parse_reference("source_images[0]", "cat.png", 0, "source", from_client=False)
    with pytest.raises(InvalidRequestError, match="at most 16"):
        source_references([str(n) for n in range(1, 18)], None, from_client=True)


def test_a_backend_says_what_it_takes() -> None:
    none = SourceSupport()
    assert none.refusal("text", 1, None, None, False) == (
        "source_images",
        "names 1 image; backend 'text' takes no source images",
    )
    mock = MockBackend(max_source_images=2).source_support()
    assert mock.refusal("mock", 2, "img2img", 0.4, True) is None
    assert mock.refusal("mock", 3, None, None, False) is not None
    assert mock.refusal("mock", 1, "edit", 0.4, False) == (
        "strength",
        "applies to mode img2img only",
    )
    assert mock.refusal("mock", 0, "edit", None, False) is not None


def test_a_web_clients_mode_strength_and_mask_follow_client_options(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(
        {
            "backends": {
                "mock": {"type": "mock"},
                "open": {
                    "type": "mock",
                    "client_options": {
                        "request.mode": {"choices": ["img2img"]},
                        "request.strength": {"min": 0.2, "max": 0.8},
                        "strength": {"min": 0, "max": 5},
                    },
                },
                "text": {"type": "mock", "max_source_images": 0},
            }
        }
    )
    setup = load_setup(config)

    def plan(backend: str, **fields: object) -> None:
        spec = ImageSpec(prompt="dusk", backend=backend, source_images=["7"], job_id=1, **fields)
        plan_generation(spec, setup)

    plan("mock")
    with pytest.raises(InvalidRequestError, match="mode: is not something a client may set"):
        plan("mock", mode="img2img")
    plan("open", mode="img2img", strength=0.5)
    with pytest.raises(InvalidRequestError, match=r"strength: 0\.9 is out of range"):
        plan("open", mode="img2img", strength=0.9)
    with pytest.raises(InvalidRequestError, match="mask: is not something a client may set"):
        plan("open", mask="8")
    with pytest.raises(InvalidRequestError, match="backend 'text' takes no source images"):
        plan("text")
    open_backend = setup.backend("open").backend
    assert open_backend.client_option_problems() == []
    open_backend.check_options({"strength": 4}, from_client=True)
    with pytest.raises(InvalidRequestError, match=r"request\.mode in client_options rules"):
        open_backend.check_options({"request.mode": "edit"}, from_client=False)
    paint = MockBackend(client_options={"request.mode": {"choices": ["paint"]}})
    assert paint.client_option_problems() == [
        (
            "request.mode",
            "'paint' is not available; takes up to 4 source images (modes edit, img2img; a mask)",
        )
    ]

"""Insert ``iTXt`` text chunks into PNG bytes without re-encoding the image.

Pillow can write text chunks only by re-encoding the whole image, which costs time on large
images and drops chunks other tools put there (ComfyUI stores its workflow in PNG text
chunks). Inserting chunks after ``IHDR`` keeps every original byte of pixel data.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(data: bytes) -> bool:
    """True if ``data`` starts with the PNG signature."""
    return data.startswith(PNG_SIGNATURE)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def itxt_chunk(keyword: str, text: str) -> bytes:
    """One uncompressed ``iTXt`` chunk (UTF-8 text; keyword 1-79 Latin-1 characters)."""
    key = keyword.encode("latin-1")
    if not 1 <= len(key) <= 79 or b"\x00" in key:
        raise ValueError(f"invalid PNG text keyword {keyword!r}")
    payload = key + b"\x00" + b"\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")
    return _chunk(b"iTXt", payload)


def add_text_chunks(data: bytes, entries: Mapping[str, str]) -> bytes:
    """PNG ``data`` with one ``iTXt`` chunk per entry inserted after ``IHDR``."""
    if not is_png(data):
        raise ValueError("not a PNG image")
    (ihdr_length,) = struct.unpack(">I", data[8:12])
    if data[12:16] != b"IHDR":
        raise ValueError("PNG does not start with an IHDR chunk")
    insert_at = 8 + 12 + ihdr_length
    chunks = b"".join(itxt_chunk(key, value) for key, value in entries.items())
    return data[:insert_at] + chunks + data[insert_at:]

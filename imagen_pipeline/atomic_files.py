"""Atomic file writes: a temp file in the same folder, fsync, then link or rename.

A half-written file never appears under its final name. ``exclusive=True`` never replaces
an existing file (the final name is claimed with a hard link, which fails if it exists).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's contents."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path_for(path: Path) -> Path:
    """Hidden temp name next to ``path``: ``.<name>.<random>.partial``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def _open_temp(temp: Path) -> BinaryIO:
    """Create ``temp`` in its folder, creating the folder again if another process removed
    it meanwhile (an emptied staging folder is removed, :func:`remove_if_empty`)."""
    for _ in range(3):
        temp.parent.mkdir(parents=True, exist_ok=True)
        try:
            return temp.open("wb")
        except FileNotFoundError:
            continue
    return temp.open("wb")


def remove_if_empty(directory: Path) -> None:
    """Remove ``directory`` if nothing is in it (another process may just be filling it)."""
    with contextlib.suppress(OSError):
        directory.rmdir()


def write_atomic(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; with ``exclusive`` raise if ``path`` exists."""
    temp = temp_path_for(path)
    try:
        with _open_temp(temp) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(temp, path)
            except FileExistsError:
                raise
            except OSError:
                # Filesystems without hard links: best effort check-then-rename.
                if path.exists():
                    raise FileExistsError(path) from None
                temp.rename(path)
        else:
            temp.replace(path)
        _fsync_dir(path.parent)
    finally:
        temp.unlink(missing_ok=True)

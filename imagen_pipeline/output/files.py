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


def write_atomic(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; with ``exclusive`` raise if ``path`` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        with temp.open("wb") as handle:
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

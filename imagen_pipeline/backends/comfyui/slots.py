"""Queue slots: how many prompts this pipeline keeps in one ComfyUI server's queue at once.

Every Dagster run is its own process, so the limit is enforced with lock files: one file per
slot in a folder keyed by the server URL, taken with ``fcntl.flock``. The kernel releases a
slot when its process ends, however it ends, so a killed run never leaks one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from imagen_pipeline.errors import TransientBackendError

SLOT_POLL_S = 0.25
"""Seconds between attempts to take a slot while all are held."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/imagen/comfyui`` (default ``~/.local/state/imagen/comfyui``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(state) / "imagen" / "comfyui"


def server_key(url: str) -> str:
    """A folder name for a server: readable host and port plus a hash of the full URL."""
    parts = urlsplit(url.lower())
    readable = re.sub(r"[^a-z0-9.-]+", "_", parts.netloc) or "server"
    digest = hashlib.sha256(f"{parts.scheme}://{parts.netloc}{parts.path}".encode()).hexdigest()
    return f"{readable}-{digest[:12]}"


@dataclass(frozen=True)
class Slot:
    """A taken slot: the open, locked file."""

    index: int
    handle: IO[str]

    def release(self) -> None:
        """Give the slot back."""
        self.handle.truncate(0)
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class QueueSlots:
    """``limit`` lock files for the server at ``url``."""

    def __init__(self, url: str, limit: int, state_dir: Path, log: Any) -> None:
        self.url = url
        self.limit = limit
        self.folder = state_dir / server_key(url)
        self.log = log

    def slot_path(self, index: int) -> Path:
        """The lock file of slot ``index``."""
        return self.folder / f"slot-{index}.lock"

    def holders(self) -> list[str]:
        """What the holders wrote into the slot files (run id and process), for log lines."""
        found = []
        for index in range(self.limit):
            try:
                text = self.slot_path(index).read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if text:
                found.append(text)
        return found

    def free(self) -> int:
        """How many slots no process holds right now."""
        self.folder.mkdir(parents=True, exist_ok=True)
        count = 0
        for index in range(self.limit):
            with self.slot_path(index).open("a+", encoding="utf-8") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                fcntl.flock(handle, fcntl.LOCK_UN)
                count += 1
        return count

    def try_take(self, holder: str) -> Slot | None:
        """A free slot, taken for ``holder``, or None when all are held."""
        self.folder.mkdir(parents=True, exist_ok=True)
        taken = self._try_take(holder)
        return Slot(*taken) if taken is not None else None

    @contextmanager
    def hold(self, holder: str, deadline: float) -> Iterator[int]:
        """Take a free slot (waiting until ``deadline``), yield its index, release it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        waited = False
        while True:
            taken = self._try_take(holder)
            if taken is not None:
                index, handle = taken
                break
            if not waited:
                held_by = "; ".join(self.holders()) or "other runs"
                self.log.info(
                    f"ComfyUI {self.url}: all {self.limit} queue slots (pool_limit) are taken "
                    f"({held_by}); waiting for one"
                )
                waited = True
            if time.monotonic() >= deadline:
                raise TransientBackendError(
                    f"ComfyUI {self.url}: no queue slot (pool_limit {self.limit}) came free "
                    "before timeout_s"
                )
            time.sleep(SLOT_POLL_S)
        try:
            yield index
        finally:
            Slot(index, handle).release()

    def _try_take(self, holder: str) -> tuple[int, IO[str]] | None:
        for index in range(self.limit):
            handle = self.slot_path(index).open("a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.truncate(0)
            handle.write(holder)
            handle.flush()
            return index, handle
        return None

"""The servers of one ComfyUI instance: their settings, their health, the order a job
tries them in, and the least busy one's queue slot.

A server that could not be reached is marked down in a small file beside its queue slots
(``<state_dir>/<server>/health.json``), so every run on this machine skips it for a while:
5 s after the first failure, doubling up to 5 minutes. When that time has passed the next
job tries it again (the re-probe); one that answers is marked up and gets work again.
"""

from __future__ import annotations

import fcntl
import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imagen_pipeline.atomic_files import write_atomic
from imagen_pipeline.backends.comfyui.slots import QueueSlots, Slot

FIRST_BACKOFF_S = 5.0
MAX_BACKOFF_S = 300.0


def normalized_url(value: str) -> str:
    """An http(s) server URL without a trailing slash; ``ValueError`` otherwise."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL such as http://mrock:8188")
    return value.strip().rstrip("/")


class ServerConfig(BaseModel):
    """One ComfyUI server of an instance (a GPU box)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="The server, e.g. http://mrock:8188.")
    label: str | None = Field(
        default=None, description="Name of the box in logs and lineage; empty: host:port."
    )
    slots: int | None = Field(
        default=None,
        ge=1,
        description="Prompts this pipeline keeps in this server's queue at once; empty: the "
        "instance's pool_limit.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return normalized_url(value)

    def name(self) -> str:
        """The label, else ``host:port``."""
        return self.label or urlsplit(self.url).netloc


@dataclass(frozen=True)
class Server:
    """A configured server with what a job needs to use it."""

    name: str
    url: str
    slots: QueueSlots

    @property
    def health_path(self) -> Path:
        """Where the server's health is kept."""
        return self.slots.folder / "health.json"

    def down_until(self) -> float:
        """Epoch seconds until which the server is skipped (0: it is up)."""
        try:
            record = json.loads(self.health_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0.0
        value = record.get("down_until") if isinstance(record, dict) else None
        return float(value) if isinstance(value, int | float) else 0.0

    def mark_down(self, reason: str) -> float:
        """Skip the server for a backoff that doubles with each failure; returns it (s)."""
        try:
            record = json.loads(self.health_path.read_text(encoding="utf-8"))
            failures = int(record.get("failures", 0)) + 1
        except (OSError, ValueError, AttributeError, TypeError):
            failures = 1
        backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (failures - 1))
        body = {"down_until": time.time() + backoff, "failures": failures, "reason": reason}
        write_atomic(self.health_path, json.dumps(body).encode())
        return backoff

    def mark_up(self) -> None:
        """The server answered: it takes jobs again."""
        self.health_path.unlink(missing_ok=True)


def dispatch_order(servers: list[Server], now: float) -> list[Server]:
    """Servers in the order a job tries them: the up ones with the most free queue slots
    first (least busy), then those whose backoff has passed (to re-probe them), then the
    others, soonest back first; configuration order breaks ties."""

    def key(item: tuple[int, Server]) -> tuple[int, float, int]:
        index, server = item
        down_until = server.down_until()
        if down_until <= 0:
            return (0, -server.slots.free(), index)
        if down_until <= now:
            return (1, down_until, index)
        return (2, down_until, index)

    return [server for _, server in sorted(enumerate(servers), key=key)]


def take_least_busy(
    servers: list[Server], holder: str, preferred: Server | None = None
) -> tuple[Server, Slot] | None:
    """A queue slot on ``preferred`` if it has one free, else on the server of ``servers``
    with the most free slots right now (their order breaks ties), or None when every slot
    is held.

    Runs choose under one lock file: two runs that start together would otherwise both see
    two idle servers, rank them alike and both queue on the first.
    """
    if not servers:
        return None
    lock_path = servers[0].slots.folder.parent / "dispatch.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ranked = sorted(
                enumerate(servers),
                key=lambda item: (item[1] is not preferred, -item[1].slots.free(), item[0]),
            )
            for _, server in ranked:
                slot = server.slots.try_take(holder)
                if slot is not None:
                    return server, slot
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return None

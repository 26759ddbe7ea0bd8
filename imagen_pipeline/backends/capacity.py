"""How many generations the configured backends can run at once, and the Dagster limits
that follow from it: the ``imagen_gpu`` and ``imagen_cloud`` op pools and the run-queue limit
on GPU runs (``imagen config limits`` computes them, ``imagen worker`` sets the pools that
have no limit of their own, ``imagen doctor`` compares them with the limits in force).

The per-box limit is each ComfyUI server's queue slots (lock files); Dagster's limits must
let all boxes work at once, so they are the sum over the servers of every ``pool: gpu``
instance (a URL named by several instances counts once, with its largest slot count), and
the run-queue limit one more (a run starting while the others generate). Without a GPU
backend the ``imagen_gpu`` pool is unused and keeps the shipped limit (one box of two
slots). ``imagen_cloud`` bounds calls to services, which take many at once: a fixed 8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imagen_pipeline.backends.registry import Backends

GPU_POOL = "imagen_gpu"
CLOUD_POOL = "imagen_cloud"
CLOUD_POOL_LIMIT = 8
"""Cloud generations at once (the run queue's 6 runs bound them first)."""
SHIPPED_GPU_SLOTS = 2
"""The ``imagen_gpu`` limit without a GPU backend: scripts/dagster.postgres.yaml's (one box,
one prompt generating and one waiting), so such a config computes what the file says."""
GPU_TAG_LIMIT = re.compile(
    r"(-\s*key:\s*imagen/pool\s*\n\s*value:\s*imagen_gpu\s*\n\s*limit:\s*)(\d+)", re.MULTILINE
)


@dataclass(frozen=True)
class GpuCapacity:
    """GPU generations at once, where they run, and the Dagster limits that allow them."""

    slots: dict[str, int]
    """Where -> slots (a ComfyUI URL, or one entry for any other GPU instance)."""

    @property
    def op_pool_limit(self) -> int:
        """The ``imagen_gpu`` op pool limit: every slot of every box."""
        return sum(self.slots.values()) if self.slots else SHIPPED_GPU_SLOTS

    @property
    def where(self) -> str:
        """Where the slots are, for a person: ``http://box1:8188 2, http://box2:8188 2``."""
        if not self.slots:
            return "no GPU backend: the shipped limit"
        return ", ".join(f"{where} {count}" for where, count in sorted(self.slots.items()))

    @property
    def run_limit(self) -> int:
        """Runs tagged ``imagen/pool: imagen_gpu`` in flight: the pool plus one starting."""
        return self.op_pool_limit + 1


def gpu_capacity(backends: Backends) -> GpuCapacity:
    """The GPU capacity of the configured backends."""
    slots: dict[str, int] = {}
    for instance in backends.values():
        if instance.backend.pool != "gpu":
            continue
        found = instance.backend.queue_slots() or {f"backend {instance.name}": 1}
        for where, count in found.items():
            slots[where] = max(count, slots.get(where, 0))
    return GpuCapacity(slots)


def pool_limits(capacity: GpuCapacity) -> dict[str, int]:
    """The limit each generate pool needs: ``imagen_gpu`` from the GPU capacity, ``imagen_cloud``
    fixed."""
    return {GPU_POOL: capacity.op_pool_limit, CLOUD_POOL: CLOUD_POOL_LIMIT}


def set_gpu_run_limit(dagster_yaml: Path, limit: int) -> bool:
    """Set the ``imagen/pool: imagen_gpu`` run-queue limit in a dagster.yaml in place
    (comments kept); False when the file has no such entry."""
    text = dagster_yaml.read_text(encoding="utf-8")
    updated, count = GPU_TAG_LIMIT.subn(lambda m: f"{m.group(1)}{limit}", text)
    if count == 0:
        return False
    dagster_yaml.write_text(updated, encoding="utf-8")
    return True

"""How many GPU generations the configured backends can run at once, and the Dagster limits
that follow from it: the ``imagen_gpu`` op pool and the run-queue limit on GPU runs.

The per-box limit is each ComfyUI server's queue slots (lock files); Dagster's limits must
let all boxes work at once, so they are the sum over the servers of every ``pool: gpu``
instance (a URL named by several instances counts once, with its largest slot count), and
the run-queue limit one more (a run starting while the others generate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imagen_pipeline.backends.registry import Backends

GPU_POOL = "imagen_gpu"
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
        return max(1, sum(self.slots.values()))

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


def set_gpu_run_limit(dagster_yaml: Path, limit: int) -> bool:
    """Set the ``imagen/pool: imagen_gpu`` run-queue limit in a dagster.yaml in place
    (comments kept); False when the file has no such entry."""
    text = dagster_yaml.read_text(encoding="utf-8")
    updated, count = GPU_TAG_LIMIT.subn(lambda m: f"{m.group(1)}{limit}", text)
    if count == 0:
        return False
    dagster_yaml.write_text(updated, encoding="utf-8")
    return True

"""Progress of one generation: what an adapter reports, and the throttle that turns it into
log lines and updates for listeners (the run's log; the job row, for a queued job)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MIN_INTERVAL_S = 1.0
MIN_ADVANCE = 0.10


@dataclass(frozen=True)
class Progress:
    """Where a generation is: the share done, the node running and its step, the time."""

    fraction: float
    """0..1 of the whole prompt (finished and cached nodes, plus the running node's share)."""
    node_id: str
    node_class: str
    step: int | None
    """Step of the running node's progress bar (a sampler's step), if it has one."""
    steps: int | None
    elapsed_s: float

    def node_share(self) -> float | None:
        """How far the running node's progress bar is, 0..1; None without a bar."""
        if self.step is None or not self.steps:
            return None
        return self.step / self.steps

    def describe(self) -> str:
        """``43% - KSampler (node 3) step 12/28 - 9.2s elapsed``."""
        if self.node_class:
            where = f"{self.node_class} (node {self.node_id})"
        else:
            where = f"node {self.node_id}" if self.node_id else "starting"
        step = f" step {self.step}/{self.steps}" if self.step is not None else ""
        return f"{self.fraction:.0%} - {where}{step} - {self.elapsed_s:.1f}s elapsed"


ProgressListener = Callable[[Progress], None]


class ProgressThrottle:
    """Passes progress on at most once per ``min_interval_s``, and only when it moved on:
    by ``min_advance`` of the prompt, by ``min_advance`` of the running node's progress bar,
    or to another node. The first report and the end (100 %) always pass. Each report that
    passes is a line in ``log`` (prefixed with ``label``) and a call of every listener."""

    def __init__(
        self,
        log: Any,
        label: str,
        listeners: tuple[ProgressListener, ...] = (),
        *,
        min_interval_s: float = MIN_INTERVAL_S,
        min_advance: float = MIN_ADVANCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.label = label
        self.listeners = listeners
        self.min_interval_s = min_interval_s
        self.min_advance = min_advance
        self.clock = clock
        self.last_at = 0.0
        self.last: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        """Report ``progress`` if the throttle lets it through."""
        if not self._due(progress):
            return
        self.last_at, self.last = self.clock(), progress
        self.log.info(f"{self.label}: {progress.describe()}")
        for listener in self.listeners:
            listener(progress)

    def _due(self, progress: Progress) -> bool:
        last = self.last
        if last is None or (progress.fraction >= 1.0 > last.fraction):
            return True
        if self.clock() - self.last_at < self.min_interval_s:
            return False
        if progress.node_id != last.node_id:
            return True
        if progress.fraction - last.fraction >= self.min_advance:
            return True
        bar, last_bar = progress.node_share(), last.node_share()
        return bar is not None and last_bar is not None and bar - last_bar >= self.min_advance

"""Live progress of a queued job in its own row: ``imagen.jobs.progress`` (0..1) and
``progress_text`` ("image 2/4: sampling 12/28", "uploading"), which a web UI polls or gets
through Supabase Realtime.

The generate step feeds it its (already throttled) backend progress; the later steps set
their stage. Writes are guarded by the row's run and status, so a run that no longer owns
its row never touches it, and a failed write never fails the run: progress is a courtesy,
the row's status is the record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

from imagen_pipeline.backends.progress import Progress

MIN_INTERVAL_S = 1.0
"""At most one write per second per job (the end and stage changes always go through)."""
TEXT_MAX_CHARS = 200
GENERATION_SHARE = 0.9
"""Share of ``progress`` the images' generation covers; writing, uploading and recording
take the rest, and ``done`` sets 1."""
STAGE_SHARES = {"writing files": 0.9, "uploading": 0.95}

logger = logging.getLogger("imagen.queue.progress")


def describe_step(progress: Progress) -> str:
    """``sampling 12/28`` while a node with a progress bar runs, else the node's class."""
    if progress.step is not None and progress.steps:
        return f"sampling {progress.step}/{progress.steps}"
    return progress.node_class or "starting"


class JobProgress:
    """Writes one job's progress into its row for the run that owns it."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        job_id: int,
        run_id: str,
        count: int,
        *,
        min_interval_s: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self.job_id = job_id
        self.run_id = run_id
        self.count = count
        self.variation = 0
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.last_at: float | None = None
        self.failed = False

    def image(self, variation: int) -> None:
        """The images before ``variation`` are made; progress now reports on this one."""
        self.variation = variation

    def __call__(self, progress: Progress) -> None:
        """A backend progress report for the current image (a ProgressThrottle listener)."""
        done = (self.variation + min(1.0, max(0.0, progress.fraction))) / self.count
        text = self._prefixed(describe_step(progress))
        self.write(GENERATION_SHARE * done, text, force=progress.fraction >= 1)

    def stage(self, text: str) -> None:
        """A later step's stage (one of ``STAGE_SHARES``); always written."""
        self.write(STAGE_SHARES[text], text, force=True)

    def write(self, share: float, text: str, *, force: bool = False) -> bool:
        """Set the row's progress if it is still this run's and running; True if written."""
        now = self.clock()
        if not force and self.last_at is not None and now - self.last_at < self.min_interval_s:
            return False
        self.last_at = now
        try:
            if self._conn is None:
                self._conn = self._connect()
            with self._conn.transaction():
                cursor = self._conn.execute(
                    """
                    UPDATE imagen.jobs SET progress = %(share)s, progress_text = %(text)s
                     WHERE id = %(id)s AND run_id = %(run_id)s AND status = 'running'
                    """,
                    {
                        "share": round(min(1.0, max(0.0, share)), 4),
                        "text": text[:TEXT_MAX_CHARS],
                        "id": self.job_id,
                        "run_id": self.run_id,
                    },
                )
            return cursor.rowcount == 1
        except psycopg.Error as error:
            if not self.failed:
                logger.warning("imagen.jobs row %s: progress not written: %s", self.job_id, error)
            self.failed = True
            self.close()
            return False

    def close(self) -> None:
        """Release the connection (a later write opens another)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _prefixed(self, text: str) -> str:
        return f"image {self.variation + 1}/{self.count}: {text}" if self.count > 1 else text

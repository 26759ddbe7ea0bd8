"""Dagster's run queue, looked at twice a second.

``QueuedRunCoordinator`` takes ``dequeue_interval_seconds`` in whole seconds, so the daemon
looks at the queue at best every second and a new run waits half a second on average before
it starts (more: the daemon also waits out the time a look takes, in steps of 0.5 s). For an
image that is a tenth of a GPU box's time per image, paid by every job and, at the start of
a batch, by each box's first image. The daemon itself takes any number of seconds; only the
coordinator's config and constructor insist on an integer.

:class:`FrequentQueuedRunCoordinator` is the same coordinator with ``dequeue_interval_seconds``
a number of seconds of at least 0.5: the daemon sleeps in 0.5 s steps between looks, so a
shorter interval would look no more often. Each look is the run coordinator's usual reads of
the queued and in-progress runs.

It relies on the daemon reading ``dequeue_interval_seconds`` from the coordinator when it
starts (``dagster/_daemon/controller.py``), so the Dagster pin applies
(imagen_pipeline_tests/instance/test_run_queue.py checks the daemon it builds).

Looking twice a second, the daemon would also say twice a second that the queue is full
("6 runs are currently in progress. Maximum is 6, won't launch more.", 7,200 lines an hour
of a busy GPU box): :class:`QueueStateChanges` lets that line through only when it changes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import dagster as dg

SHORTEST_INTERVAL_S = 0.5
"""How often the daemon checks whether its interval has passed (``IntervalDaemon``)."""
DEFAULT_INTERVAL_S = 0.5
QUEUE_DAEMON_LOGGER = "dagster.daemon.QueuedRunCoordinatorDaemon"
FULL_QUEUE = re.compile(r"runs are currently in progress\. Maximum is \d+, won't launch more")


class QueueStateChanges(logging.Filter):
    """Passes the run queue daemon's "queue is full" line only when it differs from the
    last one (another count), and every other line."""

    def __init__(self) -> None:
        super().__init__()
        self._last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a repeat of the last "queue is full" line."""
        message = record.getMessage()
        if not FULL_QUEUE.search(message):
            self._last = None
            return True
        if message == self._last:
            return False
        self._last = message
        return True


def quiet_full_queue_lines(logger: logging.Logger | None = None) -> None:
    """Install :class:`QueueStateChanges` on the run queue daemon's logger (once)."""
    logger = logger or logging.getLogger(QUEUE_DAEMON_LOGGER)
    if not any(isinstance(existing, QueueStateChanges) for existing in logger.filters):
        logger.addFilter(QueueStateChanges())


def checked_interval(value: float | None) -> float:
    """``value`` (default :data:`DEFAULT_INTERVAL_S`) if it is at least 0.5 s, else a clear
    error naming the field."""
    interval = DEFAULT_INTERVAL_S if value is None else float(value)
    if interval < SHORTEST_INTERVAL_S:
        raise dg.DagsterInvalidConfigError(
            f"run_coordinator: dequeue_interval_seconds must be at least {SHORTEST_INTERVAL_S} "
            f"(the daemon checks its interval every {SHORTEST_INTERVAL_S} s); got {value}",
            [],
            value,
        )
    return interval


class FrequentQueuedRunCoordinator(dg.QueuedRunCoordinator):
    """``QueuedRunCoordinator`` whose ``dequeue_interval_seconds`` may be a fraction of a
    second (at least 0.5; default 0.5). Every other field is ``QueuedRunCoordinator``'s."""

    def __init__(self, dequeue_interval_seconds: float | None = None, **fields: Any) -> None:
        interval = checked_interval(dequeue_interval_seconds)
        super().__init__(dequeue_interval_seconds=None, **fields)
        self._interval_s = interval
        quiet_full_queue_lines()

    @property
    def dequeue_interval_seconds(self) -> float:  # type: ignore[override]
        """Seconds between the daemon's looks at the queue (read by the daemon at start)."""
        return self._interval_s

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """``QueuedRunCoordinator``'s fields, with a fractional ``dequeue_interval_seconds``."""
        fields = dict(dg.QueuedRunCoordinator.config_type())  # type: ignore[call-overload]
        fields["dequeue_interval_seconds"] = dg.Field(
            dg.Float,
            is_required=False,
            default_value=DEFAULT_INTERVAL_S,
            description=(
                "Seconds between the daemon's looks at the run queue, at least "
                f"{SHORTEST_INTERVAL_S} (the daemon checks its interval every "
                f"{SHORTEST_INTERVAL_S} s)."
            ),
        )
        return fields

"""``imagen daemon``: Dagster's ``dagster-daemon run`` with a log that says what changed.

Dagster's sensor daemon logs two INFO lines for every tick of every sensor, whatever the
sensor returns (``dagster/_daemon/sensor.py``, dagster 1.13): ``Checking for new runs for
sensor: <name>`` before it evaluates the sensor and, when the tick requested no run,
``Sensor <name> skipped: <reason>`` (or ``No run requests returned for <name>, skipping``).
The jobs sensor ticks every 5 s, so an idle queue wrote 24 lines a minute. This command
runs the same daemon with one logging filter, :class:`QuietIdleTicks`, on the sensor
daemon's logger: the first line of a tick goes, and so does an idle tick's line when it
repeats the sensor's previous one with nothing logged in between. Everything else the
daemon logs is kept: launched runs, the first idle tick after them (the queue drained), a
new skip reason, warnings and errors. A tick's history in the UI is not affected.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

SENSOR_DAEMON_LOGGER = "dagster.daemon.SensorDaemon"
TICK_START = re.compile(r"Checking for new runs for sensor: (?P<sensor>\S+)")
IDLE_TICK = re.compile(
    r"Sensor (?P<skipped>\S+) skipped: .*|No run requests returned for (?P<empty>\S+), skipping",
    re.DOTALL,
)


class QuietIdleTicks(logging.Filter):
    """Drops the sensor daemon's line for each tick's start, and an idle tick's line when
    it repeats the sensor's last one with no other line of the sensor daemon in between."""

    def __init__(self) -> None:
        super().__init__()
        self.last_idle: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a line that says only that nothing changed."""
        message = record.getMessage()
        if TICK_START.fullmatch(message):
            return False
        idle = IDLE_TICK.fullmatch(message)
        if idle is None:
            self.last_idle.clear()
            return True
        sensor = idle["skipped"] or idle["empty"]
        if self.last_idle.get(sensor) == message:
            return False
        self.last_idle[sensor] = message
        return True


def run_daemon(args: Sequence[str]) -> None:
    """Run ``dagster-daemon run <args>`` in this process with :class:`QuietIdleTicks`."""
    logging.getLogger(SENSOR_DAEMON_LOGGER).addFilter(QuietIdleTicks())
    [command] = entry_points(group="console_scripts", name="dagster-daemon")
    sys.argv = ["dagster-daemon", "run", *args]
    command.load()()

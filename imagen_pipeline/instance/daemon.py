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

The sensor daemon looks at its sensors every 5 s (``MIN_INTERVAL_LOOP_TIME``);
``IMAGEN_SENSOR_LOOP_S`` sets another period for this daemon (a queue without the NOTIFY
listener then picks rows up sooner, for one sensor evaluation and one tick row per period).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points

from imagen_pipeline.instance.dagster_internals import set_sensor_loop_seconds

SENSOR_DAEMON_LOGGER = "dagster.daemon.SensorDaemon"
TICK_START = re.compile(r"Checking for new runs for sensor: (?P<sensor>\S+)")
SENSOR_LOOP_ENV = "IMAGEN_SENSOR_LOOP_S"
SENSOR_LOOP_RANGE_S = (0.5, 60.0)


class SensorLoopError(ValueError):
    """``IMAGEN_SENSOR_LOOP_S`` is not a number of seconds in :data:`SENSOR_LOOP_RANGE_S`."""


def sensor_loop_s(environ: Mapping[str, str]) -> float | None:
    """The sensor daemon's period from ``IMAGEN_SENSOR_LOOP_S``, or None to keep Dagster's."""
    raw = environ.get(SENSOR_LOOP_ENV, "").strip()
    if not raw:
        return None
    low, high = SENSOR_LOOP_RANGE_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not low <= seconds <= high:
        raise SensorLoopError(
            f"{SENSOR_LOOP_ENV}={raw!r}: the sensor daemon's period must be a number of "
            f"seconds from {low:g} to {high:g}; unset, it is Dagster's 5"
        )
    return seconds


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
    """Run ``dagster-daemon run <args>`` in this process with :class:`QuietIdleTicks` and
    the sensor period of ``IMAGEN_SENSOR_LOOP_S``."""
    period = sensor_loop_s(os.environ)
    if period is not None:
        set_sensor_loop_seconds(period)
    logging.getLogger(SENSOR_DAEMON_LOGGER).addFilter(QuietIdleTicks())
    [command] = entry_points(group="console_scripts", name="dagster-daemon")
    sys.argv = ["dagster-daemon", "run", *args]
    command.load()()

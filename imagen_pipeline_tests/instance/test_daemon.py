"""``imagen daemon``'s log filter: what the sensor daemon's lines become (the real daemon's
output is checked in queue/test_queue_daemon.py, ``test_an_idle_daemon_logs_nothing_per_tick``)."""

from __future__ import annotations

import logging

import pytest

from imagen_pipeline.instance.daemon import (
    SENSOR_DAEMON_LOGGER,
    SENSOR_LOOP_ENV,
    QuietIdleTicks,
    SensorLoopError,
    sensor_loop_s,
)


def kept(lines: list[str]) -> list[str]:
    """The lines of the sensor daemon's log that pass one filter, in order."""
    quiet = QuietIdleTicks()
    records = [
        logging.LogRecord(SENSOR_DAEMON_LOGGER, logging.INFO, __file__, 1, line, None, None)
        for line in lines
    ]
    return [record.getMessage() for record in records if quiet.filter(record)]


IDLE = "Sensor imagen_jobs_sensor skipped: no pending imagen.jobs rows"
CHECK = "Checking for new runs for sensor: imagen_jobs_sensor"


def test_idle_ticks_log_their_first_skip_only() -> None:
    assert kept([CHECK, IDLE] * 5) == [IDLE]


def test_a_tick_that_launched_runs_is_logged_and_so_is_the_next_idle_one() -> None:
    busy = [
        CHECK,
        "Launching run for imagen_jobs_sensor",
        "Completed launch of run 1a2b for imagen_jobs_sensor",
    ]
    assert kept([CHECK, IDLE, *busy, CHECK, IDLE, CHECK, IDLE]) == [IDLE, *busy[1:], IDLE]


def test_a_new_skip_reason_is_logged() -> None:
    off = (
        "Sensor imagen_jobs_sensor skipped: IMAGEN_DATABASE_URL is not set; "
        "the imagen.jobs queue is off"
    )
    empty = "No run requests returned for other_sensor, skipping"
    assert kept([CHECK, off, CHECK, off, CHECK, IDLE, empty, CHECK, empty, IDLE]) == [
        off,
        IDLE,
        empty,
    ]


def test_the_sensor_period_is_dagsters_unless_set() -> None:
    assert sensor_loop_s({}) is None
    assert sensor_loop_s({SENSOR_LOOP_ENV: " "}) is None
    assert sensor_loop_s({SENSOR_LOOP_ENV: "1"}) == 1.0


@pytest.mark.parametrize("raw", ["0", "0.1", "61", "soon", "nan", "-5"])
def test_a_sensor_period_out_of_range_names_the_variable_and_the_range(raw: str) -> None:
    with pytest.raises(SensorLoopError) as refused:
        sensor_loop_s({SENSOR_LOOP_ENV: raw})
    assert str(refused.value) == (
        f"IMAGEN_SENSOR_LOOP_S={raw!r}: the sensor daemon's period must be a number of "
        "seconds from 0.5 to 60; unset, it is Dagster's 5"
    )

import signal

import pytest

pytest_plugins = [
    "imagen_pipeline_tests.fixtures.alerts",
    "imagen_pipeline_tests.fixtures.imagen",
    "imagen_pipeline_tests.fixtures.postgres",
    "imagen_pipeline_tests.fixtures.celery",
    "imagen_pipeline_tests.fixtures.daemon",
]


LONGEST_MODULES_FIRST = (
    "instance/test_celery_launcher.py",
    "queue/test_queue_daemon.py",
    "queue/test_outages.py",
    "queue/test_fair_queue.py",
    "cli/test_doctor.py",
)
"""Modules that run daemon stacks, in the order ``scripts/test.sh`` hands them out (it gives
whole modules to its processes in collection order: ``--dist loadfile
--no-loadscope-reorder``). Longest first (seconds each with two processes on 2026-12-07:
celery launcher 155, queue daemon 91, doctor 75, outages 65, fair queue 65), except the
doctor's, which starts and checks many processes: started beside the two longest it
doubled (82 -> 158 s) and the suite took 7.1 minutes instead of 5.8."""


def pytest_configure(config: pytest.Config) -> None:
    """Give the test process Python's own SIGINT handler when it was started with SIGINT
    ignored (a shell's background job does that). Dagster maps SIGTERM to SIGINT's handler
    after each run it executes in the main thread, so SIGTERM would be ignored too, and so
    in every process the suite starts afterwards: the ``tail`` processes of Dagster's
    compute logs then ignore their end, and each in-process run with captured logs waited
    twice 30 s for them (one re-execution test took 61 s instead of 1 s)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the longest modules first so that the processes finish together."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0].removeprefix("imagen_pipeline_tests/")
        if path in LONGEST_MODULES_FIRST:
            return LONGEST_MODULES_FIRST.index(path)
        return len(LONGEST_MODULES_FIRST)

    items.sort(key=rank)

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
    "cli/test_doctor.py",
    "queue/test_outages.py",
    "queue/test_fair_queue.py",
)
"""Modules that run daemon stacks, longest first (seconds each in one suite run on
2026-12-07, two processes: 155, 91, 75, 65, 65 of 761 in all). ``scripts/test.sh`` hands
whole modules to its processes in collection order (``--dist loadfile
--no-loadscope-reorder``); started last, the longest module ran alone for minutes while the
other processes idled."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the longest modules first so that the processes finish together."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0].removeprefix("imagen_pipeline_tests/")
        if path in LONGEST_MODULES_FIRST:
            return LONGEST_MODULES_FIRST.index(path)
        return len(LONGEST_MODULES_FIRST)

    items.sort(key=rank)

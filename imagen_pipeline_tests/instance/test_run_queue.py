"""FrequentQueuedRunCoordinator as the production instance config sets it: the daemon it
builds looks at the run queue twice a second, and every other run-queue setting is still
Dagster's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._daemon.controller import create_daemon_of_type
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from imagen_pipeline.instance.run_queue import QUEUE_DAEMON_LOGGER, FrequentQueuedRunCoordinator
from imagen_pipeline_tests.fixtures.imagen import PRODUCTION_INSTANCE


def production(section: str) -> Any:
    """One top-level block of scripts/dagster.postgres.yaml."""
    return yaml.safe_load(PRODUCTION_INSTANCE.read_text())[section]


def instance_with(tmp_path: Path, run_coordinator: dict[str, Any]) -> dg.DagsterInstance:
    """A SQLite instance with this run coordinator and the production run limits."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    config = {"run_coordinator": run_coordinator, "concurrency": production("concurrency")}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


def test_the_daemon_looks_at_the_queue_twice_a_second(tmp_path: Path) -> None:
    with instance_with(tmp_path, production("run_coordinator")) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, FrequentQueuedRunCoordinator)
        daemon = create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance)
        assert isinstance(daemon, QueuedRunCoordinatorDaemon)
        assert daemon.interval_seconds == 0.5
        assert coordinator.dequeue_use_threads
        assert coordinator.dequeue_num_workers == 4
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == 6
        assert {"key": "imagen/pool", "value": "imagen_gpu", "limit": 3} in (
            queue.tag_concurrency_limits
        )


@pytest.mark.parametrize("interval", [0.25, 0])
def test_an_interval_the_daemon_cannot_keep_is_refused_by_name(
    interval: float, tmp_path: Path
) -> None:
    block = production("run_coordinator")
    block["config"]["dequeue_interval_seconds"] = interval
    with pytest.raises(dg.DagsterInvalidConfigError, match="dequeue_interval_seconds must be"):
        instance_with(tmp_path, block).run_coordinator  # noqa: B018


def test_a_full_queue_is_reported_when_it_changes_not_twice_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with instance_with(tmp_path, production("run_coordinator")) as instance:
        daemon = create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance)
        assert isinstance(daemon, QueuedRunCoordinatorDaemon)

        def started_runs(count: int) -> None:
            for _ in range(count):
                instance.add_run(
                    dg.DagsterRun(job_name="generate_image", status=dg.DagsterRunStatus.STARTED)
                )

        def look() -> None:
            config = instance.get_concurrency_config()
            assert daemon._get_runs_to_dequeue(instance, config, None) == []

        started_runs(6)
        with caplog.at_level("INFO", logger=QUEUE_DAEMON_LOGGER):
            for _ in range(5):
                look()
            started_runs(1)
            look()
            look()
        full = [r.getMessage() for r in caplog.records if "won't launch more" in r.getMessage()]
        assert full == [
            "6 runs are currently in progress. Maximum is 6, won't launch more.",
            "7 runs are currently in progress. Maximum is 6, won't launch more.",
        ]

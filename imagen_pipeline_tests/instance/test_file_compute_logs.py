"""FileComputeLogManager against Dagster's LocalComputeLogManager: the same files, read the
same way by the UI, and no processes started per run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from imagen_pipeline.instance.file_compute_logs import ECHO_ENV, FileComputeLogManager
from imagen_pipeline_tests.fixtures.imagen import PRODUCTION_INSTANCE, VENV_BIN, subprocess_env
from imagen_pipeline_tests.instance import compute_logs_probe
from imagen_pipeline_tests.instance.compute_logs_probe import STDERR_TEXT, STDOUT_TEXT

FILE_MANAGER = {
    "module": "imagen_pipeline.instance.file_compute_logs",
    "class": "FileComputeLogManager",
}
DAGSTER_MANAGER = {
    "module": "dagster.core.storage.local_compute_log_manager",
    "class": "LocalComputeLogManager",
}


def run_probe(
    tmp_path: Path, manager: dict[str, object], echo: str | None = None
) -> tuple[dg.DagsterInstance, str, list[str]]:
    """Execute the probe job on a SQLite instance with ``manager`` as its compute log
    manager (and ``$IMAGEN_COMPUTE_LOG_ECHO`` set to ``echo``); returns the instance, the run
    id and the probe op's child processes."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    if manager is DAGSTER_MANAGER:
        manager = {**manager, "config": {"base_dir": str(home / "storage")}}
    (home / "dagster.yaml").write_text(yaml.safe_dump({"compute_logs": manager}))
    result = tmp_path / "children.json"
    subprocess.run(
        [
            str(VENV_BIN / "dagster"),
            "job",
            "execute",
            "-f",
            compute_logs_probe.__file__,
            "-j",
            "compute_logs_probe",
        ],
        env=subprocess_env(
            DAGSTER_HOME=str(home),
            PROBE_RESULT=str(result),
            **({ECHO_ENV: echo} if echo is not None else {}),
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    instance = dg.DagsterInstance.from_config(str(home))
    (run,) = instance.get_runs()
    return instance, run.run_id, json.loads(result.read_text())


def captured(instance: dg.DagsterInstance, run_id: str) -> tuple[str, str]:
    """The run's captured stdout and stderr, read as the webserver reads them."""
    (event,) = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED
    ).records
    data = event.event_log_entry.dagster_event.logs_captured_data  # type: ignore[union-attr]
    manager = instance.compute_log_manager
    log_key = manager.build_log_key_for_run(run_id, data.file_key)
    assert manager.is_capture_complete(log_key)
    log = manager.get_log_data(log_key)
    return (log.stdout or b"").decode(), (log.stderr or b"").decode()


def test_in_a_worker_the_run_output_is_captured_without_a_process_per_stream(
    tmp_path: Path,
) -> None:
    """As in an ``imagen worker``, which sets IMAGEN_COMPUTE_LOG_ECHO=0 for its runs."""
    instance, run_id, children = run_probe(tmp_path, FILE_MANAGER, echo="0")
    with instance:
        stdout, stderr = captured(instance, run_id)
    assert STDOUT_TEXT in stdout
    assert STDERR_TEXT in stderr
    assert children == []


@pytest.mark.parametrize("manager", [DAGSTER_MANAGER, FILE_MANAGER], ids=["dagster", "file"])
def test_outside_a_worker_it_echoes_as_dagsters_own_manager_with_tail_processes(
    manager: dict[str, object], tmp_path: Path
) -> None:
    """``dagster job execute`` from a shell still echoes; and the contrast that shows what
    the other test measures (so a Dagster upgrade has not made it vacuous)."""
    instance, run_id, children = run_probe(tmp_path, manager)
    with instance:
        stdout, stderr = captured(instance, run_id)
    assert STDOUT_TEXT in stdout
    assert STDERR_TEXT in stderr
    assert sum(command.startswith("tail -F") for command in children) == 2


def test_the_production_instance_uses_it() -> None:
    config = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    assert config["compute_logs"] == FILE_MANAGER


@pytest.mark.parametrize(
    ("configured", "folder"),
    [({}, "dagster_home/storage"), ({"base_dir": "elsewhere"}, "elsewhere")],
)
def test_logs_go_under_the_instance_unless_configured(
    configured: dict[str, str], folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also without DAGSTER_HOME: an instance opened from its folder keeps its logs there."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    manager = {**FILE_MANAGER, "config": configured} if configured else FILE_MANAGER
    (home / "dagster.yaml").write_text(yaml.safe_dump({"compute_logs": manager}))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.compute_log_manager, FileComputeLogManager)
        path = instance.compute_log_manager.get_captured_local_path(
            ["run-1", "compute_logs", "abc"], "out"
        )
    assert Path(path).resolve().is_relative_to((tmp_path / folder).resolve())

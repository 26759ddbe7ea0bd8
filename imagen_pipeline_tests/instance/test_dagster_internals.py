"""The private Dagster names the instance plumbing uses are where
``imagen_pipeline/instance/dagster_internals.py`` lists them, and a name an upgrade moves
stops the import of that module with one message naming every such name, who uses it and
why."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import tomllib
from pathlib import Path

import dagster as dg
import pytest

from imagen_pipeline.instance import dagster_internals
from imagen_pipeline.instance.dagster_internals import (
    CHECKED_AGAINST,
    PRIVATE_ATTRIBUTES,
    PRIVATE_NAMES,
    LocalComputeLogManager,
    PrivateName,
    allocate_pool_slots,
    capture_folder_of,
    launcher_instance,
    resolve,
    set_capture_folder,
    set_sensor_loop_seconds,
    storage_instance,
)

PACKAGE = Path(dagster_internals.__file__).parents[1]
PYPROJECT = PACKAGE.parent / "pyproject.toml"


@pytest.mark.parametrize("entry", PRIVATE_NAMES, ids=lambda entry: entry.name)
def test_every_private_name_is_where_the_list_says(entry: PrivateName) -> None:
    """Fails with the module's own message (who uses the name and why) if it moved."""
    found = resolve([entry])[entry.name]
    assert found is getattr(importlib.import_module(entry.module), entry.name)
    assert getattr(dagster_internals, entry.name) is found


def test_the_list_names_every_private_import_of_the_package() -> None:
    """No private Dagster import outside dagster_internals.py, whose imports (for type
    checkers only) and exports are the names on its list."""
    listed = {(entry.module, entry.name) for entry in PRIVATE_NAMES}
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._"):
                for alias in node.names:
                    found[(node.module, alias.name)] = path.name
    assert set(found.values()) <= {"dagster_internals.py"}, found
    assert set(found) == listed
    assert sorted(dagster_internals.__all__) == sorted(entry.name for entry in PRIVATE_NAMES)


def test_the_list_was_checked_against_the_pinned_dagster() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    assert f"dagster=={CHECKED_AGAINST}" in dependencies


def test_the_private_attributes_are_where_the_list_says(tmp_path: Path) -> None:
    manager = LocalComputeLogManager(str(tmp_path / "a"))
    set_capture_folder(manager, str(tmp_path / "b"))
    assert manager.get_captured_local_path(["run", "step"], "out").startswith(str(tmp_path / "b"))
    assert capture_folder_of(manager) == str(tmp_path / "b")
    with dg.instance_for_test() as instance:
        launcher = instance.run_launcher
        assert launcher_instance(launcher) is instance
        storage = instance.event_log_storage
        assert storage_instance(storage) is instance
        with storage.index_connection() as conn:
            allocate_pool_slots(storage, conn, "some_pool", 3)
        assert storage.get_concurrency_info("some_pool").slot_count == 3
        schedules = instance.schedule_storage
        with schedules.connect() as conn:  # type: ignore[attr-defined]
            assert schedules._has_instigators_table(conn) is True  # type: ignore[attr-defined]
    import dagster._daemon.sensor as sensor_daemon

    dagsters_period = sensor_daemon.MIN_INTERVAL_LOOP_TIME
    try:
        set_sensor_loop_seconds(1.5)
        assert sensor_daemon.MIN_INTERVAL_LOOP_TIME == 1.5
    finally:
        sensor_daemon.MIN_INTERVAL_LOOP_TIME = dagsters_period
    assert [entry.name for entry in PRIVATE_ATTRIBUTES] == [
        "_instance",
        "_base_dir",
        "_instance",
        "_allocate_concurrency_slots",
        "_has_instigators_table",
        "MIN_INTERVAL_LOOP_TIME",
    ]


def test_every_moved_name_is_reported_in_one_message_with_who_uses_it() -> None:
    gone = PrivateName("dagster._cli.api", "_gone_in_1_14", "celery_worker", "the run task")
    no_module = PrivateName("dagster._moved_away", "Thing", "a, b", "a reason")
    with pytest.raises(ImportError) as raised:
        resolve([PRIVATE_NAMES[0], gone, no_module])
    assert str(raised.value) == "\n".join(
        [
            "These private Dagster names, listed in imagen_pipeline/instance/"
            f"dagster_internals.py, cannot be found in the installed dagster {dg.__version__}; "
            "the list was checked against dagster 1.13.27 (the pin in pyproject.toml):",
            "- dagster._cli.api._gone_in_1_14: dagster._cli.api has no _gone_in_1_14; "
            "used by celery_worker (imagen_pipeline/instance/) for the run task",
            "- dagster._moved_away.Thing: dagster._moved_away cannot be imported "
            "(No module named 'dagster._moved_away'); "
            "used by a, b (imagen_pipeline/instance/) for a reason",
            "Find where each lives now and change its entry in PRIVATE_NAMES and its import "
            "under TYPE_CHECKING there, or install dagster 1.13.27 again.",
        ]
    )


def test_importing_the_module_after_an_upgrade_moved_names_names_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh copy of dagster_internals.py, imported while one name and one module are
    gone from the installed Dagster, stops with one ImportError naming both."""
    compute_logs = importlib.import_module("dagster._core.execution.compute_logs")
    monkeypatch.delattr(compute_logs, "redirect_to_file")
    monkeypatch.setitem(sys.modules, "dagster._grpc.types", None)
    spec = importlib.util.spec_from_file_location("fresh_internals", dagster_internals.__file__)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fresh_internals", fresh)
    with pytest.raises(ImportError) as raised:
        spec.loader.exec_module(fresh)
    lines = str(raised.value).splitlines()
    assert len(lines) == 4, lines
    assert "checked against dagster 1.13.27 (the pin in pyproject.toml)" in lines[0]
    assert lines[1].startswith(
        "- dagster._grpc.types.ExecuteRunArgs: dagster._grpc.types cannot be imported"
    )
    assert lines[1].endswith(
        "used by celery_launcher, celery_worker (imagen_pipeline/instance/) for task args"
    )
    assert lines[2] == (
        "- dagster._core.execution.compute_logs.redirect_to_file: "
        "dagster._core.execution.compute_logs has no redirect_to_file; used by "
        "file_compute_logs (imagen_pipeline/instance/) for the capture without the tail -F mirror"
    )

"""The private Dagster names the instance plumbing uses are where
``imagen_pipeline/instance/dagster_internals.py`` says; an upgrade that moves one fails here
with its name, who uses it and why."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import dagster as dg
import pytest

from imagen_pipeline.instance import dagster_internals
from imagen_pipeline.instance.dagster_internals import (
    PRIVATE_ATTRIBUTES,
    PRIVATE_NAMES,
    LocalComputeLogManager,
    PrivateName,
    allocate_pool_slots,
    capture_folder_of,
    launcher_instance,
    set_capture_folder,
    storage_instance,
)

PACKAGE = Path(dagster_internals.__file__).parents[1]


def missing(entry: PrivateName) -> str | None:
    """Why ``entry`` cannot be found in the installed Dagster, or None."""
    try:
        found = importlib.import_module(entry.module)
    except ImportError:
        found = None
    if found is None or not hasattr(found, entry.name):
        return (
            f"dagster {dg.__version__}: {entry.module}.{entry.name} is gone; "
            f"imagen_pipeline/instance/{entry.used_by} uses it for {entry.why}"
        )
    return None


@pytest.mark.parametrize("entry", PRIVATE_NAMES, ids=lambda entry: entry.name)
def test_every_private_name_is_where_the_list_says(entry: PrivateName) -> None:
    problem = missing(entry)
    assert problem is None, problem


def test_the_list_names_every_private_import_of_the_package() -> None:
    """No private Dagster import outside dagster_internals.py, and each one it makes is on
    its list."""
    listed = {(entry.module, entry.name) for entry in PRIVATE_NAMES}
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._"):
                for alias in node.names:
                    found[(node.module, alias.name)] = path.name
    assert set(found.values()) <= {"dagster_internals.py"}, found
    assert set(found) == listed


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
    assert [entry.name for entry in PRIVATE_ATTRIBUTES] == [
        "_instance",
        "_base_dir",
        "_instance",
        "_allocate_concurrency_slots",
    ]


def test_a_moved_name_is_reported_with_who_uses_it() -> None:
    moved = PrivateName("dagster._cli.api", "_gone_in_1_14", "celery_worker", "the run task")
    assert missing(moved) == (
        f"dagster {dg.__version__}: dagster._cli.api._gone_in_1_14 is gone; "
        "imagen_pipeline/instance/celery_worker uses it for the run task"
    )

"""The ``imagen`` command starts fast: commands that run no job never import Dagster."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from imagen_pipeline.cli.main import SUBCOMMANDS, cli
from imagen_pipeline_tests.fixtures.imagen import subprocess_env

PROBE = """
import json, sys
from imagen_pipeline.cli.main import cli
try:
    cli(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
except Exception as error:
    print("error:", error, file=sys.stderr)
print(json.dumps(sorted(m for m in sys.modules if m == "dagster" or m.startswith("dagster."))))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["config", "sample"],
        ["config", "validate"],
        ["config", "limits"],
        ["backends"],
        ["usage", "--help"],
        ["db", "--help"],
    ],
)
def test_commands_that_run_no_job_do_not_import_dagster(args: list[str], tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env=subprocess_env(HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    *_, modules = completed.stdout.splitlines()
    assert json.loads(modules) == [], completed.stderr


def test_help_lists_every_command_with_its_own_short_help() -> None:
    for name, (target, short_help) in SUBCOMMANDS.items():
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        assert command.name == name
        assert command.get_short_help_str(limit=100) == short_help
    assert cli.get_command(click.Context(cli), "nonsense") is None

"""`imagen config sample|validate` and `imagen backends`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from imagen_pipeline.cli.main import cli


def test_sample_validates_and_is_commented(tmp_path: Path) -> None:
    runner = CliRunner()
    sample = runner.invoke(cli, ["config", "sample"])
    assert sample.exit_code == 0
    assert sample.output.lstrip().startswith("#")
    path = tmp_path / "imagen.yaml"
    path.write_text(sample.output)
    validated = runner.invoke(cli, ["config", "validate", str(path)])
    assert validated.exit_code == 0, validated.output
    assert f"{path}: ok" in validated.output


def test_validate_reports_file_key_path_and_allowed_values(
    write_config: Callable[..., Path],
) -> None:
    path = write_config({"default_backend": "gpu"})
    result = CliRunner().invoke(cli, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert (
        f"imagen: error: {path}: default_backend: 'gpu' is not a configured backend"
        in result.output
    )


def test_backends_lists_instances_with_credential_status(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        {
            "default_backend": "b",
            "backends": {"a": {"type": "mock"}, "b": {"type": "mock", "model": "m2"}},
        }
    )
    result = CliRunner().invoke(cli, ["backends", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "MODEL", "CREDENTIALS"]
    assert lines[1].split()[:3] == ["a", "mock", "mock-v1"]
    assert lines[2].split()[:3] == ["b*", "mock", "m2"]
    assert "none needed" in lines[1]

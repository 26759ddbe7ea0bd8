"""imagen.yaml discovery, validation messages and path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagen_pipeline.cli.config_cmd import sample_config_text
from imagen_pipeline.config.loader import find_config_path, load_config, parse_config
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.generate.setup import load_setup, parse_setup


def test_builtin_default_when_no_file_exists() -> None:
    loaded = load_setup()
    assert loaded.loaded.source is None
    assert loaded.config.default_backend == "mock"
    assert sorted(loaded.backends) == ["mock"]
    assert loaded.output_dir == (Path.cwd() / "output").resolve()


def test_search_order_explicit_then_env_then_user_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    user_file = isolated_env / ".config" / "imagen.yaml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("default_backend: mock\n")
    assert find_config_path() == user_file.resolve()

    env_file = tmp_path / "env.yaml"
    env_file.write_text("default_backend: mock\n")
    monkeypatch.setenv("IMAGEN_CONFIG", str(env_file))
    assert find_config_path() == env_file.resolve()

    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("default_backend: mock\n")
    assert find_config_path(explicit) == explicit.resolve()


def test_missing_files_are_errors_naming_where_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist \(given with --config\)"):
        find_config_path(tmp_path / "nope.yaml")
    monkeypatch.setenv("IMAGEN_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(
        ConfigError, match=r"gone\.yaml does not exist \(named by \$IMAGEN_CONFIG\)"
    ):
        find_config_path()


def test_relative_output_directory_resolves_against_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "imagen.yaml"
    path.write_text("output:\n  directory: pics\n")
    assert load_config(path).output_dir == folder / "pics"


def test_unknown_top_level_key_lists_allowed_keys(tmp_path: Path) -> None:
    path = tmp_path / "imagen.yaml"
    path.write_text("outptu:\n  directory: x\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    allowed = "alerts, backends, budget, cloud, default_backend, output, queue"
    assert f"outptu: unknown key; allowed keys: {allowed}" in message


def test_wrong_type_names_key_path(tmp_path: Path) -> None:
    path = tmp_path / "imagen.yaml"
    path.write_text("output:\n  write_metadata_json: perhaps\n")
    with pytest.raises(
        ConfigError, match=r"output\.write_metadata_json: Input should be a valid boolean"
    ):
        load_config(path)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "imagen.yaml"
    path.write_text("default_backend: mock\nbackends: [unclosed\n")
    with pytest.raises(ConfigError, match=r"imagen\.yaml: line \d+, column \d+: not valid YAML"):
        load_config(path)


def test_unknown_backend_type_lists_registered_types() -> None:
    with pytest.raises(ConfigError) as error:
        parse_setup({"default_backend": "x", "backends": {"x": {"type": "dalle9"}}})
    assert "backends.x.type: unknown backend type 'dalle9'; registered types: " in str(error.value)
    assert "mock" in str(error.value)


def test_unknown_backend_field_lists_allowed_fields() -> None:
    with pytest.raises(ConfigError) as error:
        parse_setup({"backends": {"mock": {"type": "mock", "latncy_s": 1}}})
    assert "backends.mock: unknown key 'latncy_s' for type 'mock'; allowed keys: type, " in str(
        error.value
    )
    assert "latency_s" in str(error.value)


def test_backend_field_value_error_names_path() -> None:
    with pytest.raises(ConfigError, match=r"backends\.mock\.latency_s: Input should be"):
        parse_setup({"backends": {"mock": {"type": "mock", "latency_s": "slow"}}})


def test_default_backend_must_be_configured() -> None:
    with pytest.raises(
        ConfigError,
        match=r"default_backend: 'gpu' is not a configured backend; configured backends: mock",
    ):
        parse_setup({"default_backend": "gpu"})


def test_naming_template_errors_list_allowed_fields() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"output": {"naming": "{date}_{prompt}"}})
    assert "output.naming" in str(error.value)
    assert "unknown naming field {prompt}; allowed fields: {date}" in str(error.value)


def test_sample_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "sample.yaml"
    path.write_text(sample_config_text())
    loaded = load_setup(path)
    assert loaded.config.default_backend in loaded.backends

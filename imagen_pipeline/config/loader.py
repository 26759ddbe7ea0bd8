"""Finding and loading ``imagen.yaml``.

Search order: an explicit path (``--config``), the env var ``IMAGEN_CONFIG``, then
``$XDG_CONFIG_HOME/imagen.yaml`` (default ``~/.config/imagen.yaml``); when none exists the
built-in default applies (one ``mock`` backend, output to ``./output``).

This layer reads and validates the settings; each backend block stays a mapping here and is
built into its adapter by :func:`imagen_pipeline.backends.registry.build_backends`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from imagen_pipeline.config.models import ImagenConfig
from imagen_pipeline.config.validation import describe_validation_error
from imagen_pipeline.errors import ConfigError

CONFIG_ENV_VAR = "IMAGEN_CONFIG"
BUILTIN_SOURCE = "<built-in default>"


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/imagen.yaml``, defaulting to ``~/.config/imagen.yaml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "imagen.yaml"


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use, or None for the built-in default."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (given with --config)")
        return path.resolve()
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (named by ${CONFIG_ENV_VAR})")
        return path.resolve()
    default = user_config_path()
    return default.resolve() if default.is_file() else None


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from (paths resolved against its folder)."""

    source: Path | None
    config: ImagenConfig

    @property
    def source_label(self) -> str:
        """The file the config came from, or ``<built-in default>``."""
        return str(self.source) if self.source else BUILTIN_SOURCE

    @property
    def output_dir(self) -> Path:
        """``output.directory`` made absolute (relative to the config file's folder)."""
        directory = Path(self.config.output.directory).expanduser()
        if not directory.is_absolute():
            base = self.source.parent if self.source else Path.cwd()
            directory = base / directory
        return directory.resolve()


def parse_config(raw: Any, source: Path | None = None) -> LoadedConfig:
    """Validate already-parsed YAML (a mapping) into a :class:`LoadedConfig`."""
    label = str(source) if source else BUILTIN_SOURCE
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: top level must be a mapping of keys such as default_backend")
    try:
        config = ImagenConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{label}:\n{describe_validation_error(error, ImagenConfig)}") from None
    except ConfigError as error:
        raise ConfigError(f"{label}: {error.message}") from None
    return LoadedConfig(source=source, config=config)


def load_config(explicit: str | os.PathLike[str] | None = None) -> LoadedConfig:
    """Find, read and validate the config (see the module docstring for the search order)."""
    path = find_config_path(explicit)
    if path is None:
        return parse_config({})
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    return parse_config(raw, path)

"""What a plan is made from: the settings of ``imagen.yaml`` and the backend instances a run
may use (the file's, or those a Dagster resource binds in their place)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imagen_pipeline.backends.registry import BackendInstance, Backends, build_backends
from imagen_pipeline.config.loader import LoadedConfig, load_config, parse_config
from imagen_pipeline.config.models import ImagenConfig
from imagen_pipeline.errors import ConfigError


@dataclass(frozen=True)
class Setup:
    """The settings (``loaded``) and the backend instances of one run or one sensor tick."""

    loaded: LoadedConfig
    backends: Backends

    @property
    def config(self) -> ImagenConfig:
        """The validated settings."""
        return self.loaded.config

    @property
    def source_label(self) -> str:
        """The file the settings came from, or ``<built-in default>``."""
        return self.loaded.source_label

    @property
    def output_dir(self) -> Path:
        """``output.directory``, absolute."""
        return self.loaded.output_dir

    def backend(self, name: str) -> BackendInstance:
        """The instance called ``name``, or an error listing the configured ones."""
        return self.backends.instance(name)

    def with_backends(self, instances: Mapping[str, BackendInstance]) -> Setup:
        """This setup with ``instances`` added, or taking the place of those of the same name."""
        return replace(self, backends=self.backends.replaced(instances))


def setup_of(loaded: LoadedConfig) -> Setup:
    """The setup of a loaded file: its settings and its backend blocks built into adapters
    (an error names the file and the first block, or the default backend, at fault)."""
    config = loaded.config
    backends = build_backends(config.backends, loaded.source_label)
    if not config.backends:
        raise ConfigError(
            f"{loaded.source_label}: backends: at least one backend instance is required"
        )
    if config.default_backend not in backends:
        raise ConfigError(
            f"{loaded.source_label}: default_backend: {config.default_backend!r} is not a "
            f"configured backend; configured backends: {', '.join(backends.names())}"
        )
    return Setup(loaded, backends)


def load_setup(explicit: str | os.PathLike[str] | None = None) -> Setup:
    """Find, read and validate ``imagen.yaml`` (one read) into a :class:`Setup`."""
    return setup_of(load_config(explicit))


def parse_setup(raw: Any, source: Path | None = None) -> Setup:
    """Already-parsed YAML (a mapping) validated into a :class:`Setup`."""
    return setup_of(parse_config(raw, source))

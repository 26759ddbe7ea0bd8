"""Resources shared by ops and sensors."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from imagen_pipeline.config.loader import LoadedConfig, load_config


class ImagenResource(dg.ConfigurableResource):
    """``imagen.yaml``: backend instances, output settings, cloud and budget settings.

    The file is read on every use, so an edited config applies to the next run without
    restarting the daemon or reloading the code location.
    """

    config_path: str | None = Field(
        default=None,
        description="Path to imagen.yaml. Empty: $IMAGEN_CONFIG, then "
        "~/.config/imagen.yaml, then the built-in default (mock backend, ./output).",
    )

    def load(self) -> LoadedConfig:
        """Find, read and validate the config."""
        return load_config(self.config_path)

"""Resources shared by ops and sensors."""

from __future__ import annotations

import os

import dagster as dg
import psycopg
from pydantic import Field

from imagen_pipeline.config.secrets import resolve_secret
from imagen_pipeline.db.connection import connect
from imagen_pipeline.generate.setup import Setup, load_setup


class ImagenResource(dg.ConfigurableResource):
    """``imagen.yaml``: backend instances, output settings, cloud and budget settings.

    Read once per run, by the run's first step, which puts everything the later steps need
    into the run's plan; the jobs sensor reads it once per tick. So an edited config applies
    to the next run without restarting the daemon or reloading the code location.
    """

    config_path: str | None = Field(
        default=None,
        description="Path to imagen.yaml. Empty: $IMAGEN_CONFIG, then "
        "~/.config/imagen.yaml, then the built-in default (mock backend, ./output).",
    )

    def load(self) -> Setup:
        """Find, read and validate the config, and build its backend instances."""
        return load_setup(self.config_path)


class ImagenDatabaseResource(dg.ConfigurableResource):
    """The Postgres database holding the ``imagen`` and ``mai`` schemas (jobs, images, usage).

    Holds only the NAME of the env var with the libpq URL (it may carry a password).
    Unset means: no queue, no image rows, no usage rows; runs still write local files.
    """

    url_env: str = Field(
        default="IMAGEN_DATABASE_URL",
        description="Env var holding the libpq URL of the database with the imagen schema.",
    )

    def configured(self) -> bool:
        """True when the env var is set."""
        return bool(os.environ.get(self.url_env))

    def connect(self) -> psycopg.Connection:
        """A new connection (prepared statements off, for Supabase's transaction pooler)."""
        return connect(resolve_secret(self.url_env, "resources.imagen_db.url_env"))

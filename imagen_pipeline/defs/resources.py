"""Resources of the ``generate_image`` job and the jobs sensor, under fixed keys.

``imagen`` holds the settings of ``imagen.yaml`` (output, cloud, budget, queue, alerts, the
default backend) and ``backends`` the backend instances, each as typed fields with the
adapter's own settings: the code location binds them from the file when it loads
(:func:`imagen_resources`), so the resources page lists every instance and the launchpad
can override any setting for one run; ``imagen generate`` binds them from its one read of
the file; a test binds its own. A run works from these values only and reads no file.
The jobs sensor and the listener read the file again at every tick, so the queue follows
edits without a reload. ``imagen_db`` names the database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from pydantic import Field, ValidationError, create_model

from imagen_pipeline.backends.registry import BACKEND_TYPES, Backends, build_backends
from imagen_pipeline.config.loader import BUILTIN_SOURCE, LoadedConfig
from imagen_pipeline.config.models import (
    AlertsConfig,
    BudgetConfig,
    CloudConfig,
    ImagenConfig,
    OutputConfig,
    QueueConfig,
    RetentionConfig,
)
from imagen_pipeline.config.secrets import resolve_secret
from imagen_pipeline.config.validation import describe_validation_error
from imagen_pipeline.db.connection import DATABASE_URL_ENV, connect
from imagen_pipeline.defs.config_classes import as_config, config_class
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.generate.setup import Setup, load_setup, setup_of

OutputSettings = config_class(OutputConfig)
CloudSettings = config_class(CloudConfig)
BudgetSettings = config_class(BudgetConfig)
QueueSettings = config_class(QueueConfig)
AlertsSettings = config_class(AlertsConfig)
RetentionSettings = config_class(RetentionConfig)


class ImagenResource(dg.ConfigurableResource):
    """The settings of ``imagen.yaml`` (all but its backends): where images go, Storage,
    the budget, the queue's fair share, alerts to the operator, the default backend."""

    config_path: str | None = Field(
        default=None,
        description="imagen.yaml to read. Empty: $IMAGEN_CONFIG, then ~/.config/imagen.yaml, "
        "then the built-in default (mock backend, ./output). The jobs sensor and the listener "
        "read it at every tick; a run uses the settings below.",
    )
    source: str = Field(
        default=BUILTIN_SOURCE, description="The file the settings below were read from."
    )
    load_error: str | None = Field(
        default=None,
        description="Why that file could not be read when these settings were bound; every "
        "run then fails with this message.",
    )
    default_backend: str = Field(
        default="mock", description="Backend instance used when a request names none."
    )
    output: OutputSettings = Field(  # type: ignore[valid-type]
        default_factory=OutputSettings, description="Where images go and how they are named."
    )
    cloud: CloudSettings | None = Field(  # type: ignore[valid-type]
        default=None, description="Supabase Storage upload; empty: images stay local."
    )
    budget: BudgetSettings = Field(  # type: ignore[valid-type]
        default_factory=BudgetSettings, description="Daily spending limits."
    )
    queue: QueueSettings = Field(  # type: ignore[valid-type]
        default_factory=QueueSettings, description="How imagen.jobs shares the pipeline."
    )
    alerts: AlertsSettings | None = Field(  # type: ignore[valid-type]
        default=None, description="Alerts to the operator through a webhook; empty: none."
    )
    retention: RetentionSettings = Field(  # type: ignore[valid-type]
        default_factory=RetentionSettings,
        description="How long finished runs and staging records are kept.",
    )

    def retention_settings(self) -> RetentionConfig:
        """``retention:`` as bound, validated."""
        try:
            return RetentionConfig.model_validate(self.retention.model_dump())
        except ValidationError as error:
            detail = describe_validation_error(
                error, RetentionConfig, prefix="resources.imagen.retention"
            )
            raise ConfigError(detail) from None

    def read(self) -> Setup:
        """``config_path`` as it is now (the sensor's and the listener's view)."""
        return load_setup(self.config_path)

    def alerts_now(self) -> AlertsConfig | None:
        """The ``alerts:`` block of ``config_path`` as it is now (a sensor's view), else, when
        the file cannot be read, as bound: a broken file must not silence the alerts."""
        try:
            return self.read().config.alerts
        except ConfigError:
            return AlertsConfig.model_validate(self.alerts.model_dump()) if self.alerts else None

    def setup(self, backends: BackendsResource) -> Setup:
        """The run's settings and backend instances, validated as one ``imagen.yaml``."""
        if self.load_error:
            raise ConfigError(self.load_error)
        raw = {
            "default_backend": self.default_backend,
            "output": self.output.model_dump(),
            "cloud": self.cloud.model_dump() if self.cloud else None,
            "budget": self.budget.model_dump(),
            "queue": self.queue.model_dump(),
            "alerts": self.alerts.model_dump() if self.alerts else None,
            "retention": self.retention.model_dump(),
            "backends": backends.blocks(),
        }
        try:
            config = ImagenConfig.model_validate(raw)
        except ValidationError as error:
            detail = describe_validation_error(error, ImagenConfig, prefix="resources.imagen")
            raise ConfigError(detail) from None
        source = None if self.source == BUILTIN_SOURCE else Path(self.source)
        return setup_of(LoadedConfig(source=source, config=config))

    @classmethod
    def of(cls, setup: Setup, config_path: str | None = None) -> ImagenResource:
        """The settings of ``setup``, with the output folder made absolute."""
        config = setup.config
        output = config.output.model_copy(update={"directory": str(setup.output_dir)})
        return cls(
            config_path=config_path,
            source=setup.source_label,
            default_backend=config.default_backend,
            output=as_config(output),
            cloud=as_config(config.cloud) if config.cloud else None,
            budget=as_config(config.budget),
            queue=as_config(config.queue),
            alerts=as_config(config.alerts) if config.alerts else None,
            retention=as_config(config.retention),
        )


class _BackendsBase(dg.ConfigurableResource):
    """The backend instances runs may use, by type and name, each with its settings as in
    its ``imagen.yaml`` block (credentials only as the names of the env vars holding
    them)."""

    def blocks(self) -> dict[str, dict[str, Any]]:
        """Every instance as an ``imagen.yaml`` block (``type`` plus settings), by name."""
        blocks: dict[str, dict[str, Any]] = {}
        for type_name in BACKEND_TYPES:
            for name, settings in getattr(self, type_name).items():
                if name in blocks:
                    raise ConfigError(
                        f"resources.backends: {name!r} is both a {blocks[name]['type']} and a "
                        f"{type_name} instance; each name may appear once"
                    )
                blocks[name] = {"type": type_name, **settings.model_dump()}
        return blocks

    def backends(self, source_label: str = "resources.backends") -> Backends:
        """The instances built into their adapters."""
        return build_backends(self.blocks(), source_label)

    @classmethod
    def of(cls, backends: Backends) -> BackendsResource:
        """A resource holding ``backends``."""
        by_type: dict[str, dict[str, dg.Config]] = {name: {} for name in BACKEND_TYPES}
        for name, instance in backends.items():
            by_type[instance.type_name][name] = as_config(instance.backend)
        return BackendsResource(**by_type)


BackendsResource = create_model(
    "BackendsResource",
    __base__=_BackendsBase,
    __doc__=_BackendsBase.__doc__,
    **{
        type_name: (
            dict[str, config_class(adapter)],  # type: ignore[valid-type]
            Field(
                default_factory=dict,
                description=f"{type_name} instances by name: {adapter.__doc__}",
            ),
        )
        for type_name, adapter in BACKEND_TYPES.items()
    },
)
"""The ``backends`` resource: one field per adapter type (``comfyui``, ``replicate``,
``openai``, ``mock``), each a mapping of instance name to that adapter's settings."""


class ImagenDatabaseResource(dg.ConfigurableResource):
    """The Postgres database holding the ``imagen`` and ``mai`` schemas (jobs, images, usage).

    Holds only the NAME of the env var with the libpq URL (it may carry a password).
    Unset means: no queue, no image rows, no usage rows; runs still write local files.
    """

    url_env: str = Field(
        default=DATABASE_URL_ENV,
        description="Env var holding the libpq URL of the database with the imagen schema.",
    )

    def configured(self) -> bool:
        """True when the env var is set."""
        return bool(os.environ.get(self.url_env))

    def url(self) -> str | None:
        """The database URL from the env var, or None when it is not set."""
        return os.environ.get(self.url_env) or None

    def connect(self) -> psycopg.Connection:
        """A new connection (prepared statements off, for Supabase's transaction pooler)."""
        return connect(resolve_secret(self.url_env, "resources.imagen_db.url_env"))


def imagen_resources(setup: Setup, config_path: str | None = None) -> dict[str, Any]:
    """The ``imagen`` and ``backends`` resources of a loaded ``imagen.yaml``."""
    return {
        "imagen": ImagenResource.of(setup, config_path),
        "backends": BackendsResource.of(setup.backends),
    }


def load_resources(config_path: str | None = None) -> dict[str, Any]:
    """The resources of ``imagen.yaml`` as found now; when it cannot be read, resources that
    make every run fail with why (the code location still loads)."""
    try:
        return imagen_resources(load_setup(config_path), config_path)
    except ConfigError as error:
        return {
            "imagen": ImagenResource(config_path=config_path, load_error=str(error)),
            "backends": BackendsResource(),
        }


def resources_run_config(setup: Setup, config_path: str | None = None) -> dict[str, Any]:
    """The ``resources`` section of a run config binding the ``imagen`` and ``backends``
    resources of ``setup`` (for a run that loads no code location of its own)."""
    return {
        key: {"config": resource.model_dump(mode="json")}
        for key, resource in imagen_resources(setup, config_path).items()
    }

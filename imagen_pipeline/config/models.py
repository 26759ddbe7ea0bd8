"""Pydantic models of ``imagen.yaml`` (the seed's format).

Backend blocks stay raw dicts here: each adapter validates its own block
(see :mod:`imagen_pipeline.backends.registry`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from imagen_pipeline.config.ages import parse_age
from imagen_pipeline.config.secrets import is_env_var_name
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.naming.file_names import DEFAULT_NAMING, validate_template
from imagen_pipeline.naming.object_paths import DEFAULT_PATH_TEMPLATE, validate_path_template

DEFAULT_BACKENDS: dict[str, dict[str, Any]] = {"mock": {"type": "mock"}}


class OutputConfig(BaseModel):
    """Where images go and how they are named."""

    model_config = ConfigDict(extra="forbid")

    directory: str = Field(
        default="./output",
        description="Output directory; relative paths resolve against the config file's folder.",
    )
    naming: str = Field(default=DEFAULT_NAMING, description="Filename template, no extension.")
    write_metadata_json: bool = Field(
        default=True, description="Write a JSON sidecar next to each image."
    )

    @field_validator("naming")
    @classmethod
    def _check_naming(cls, value: str) -> str:
        validate_template(value)
        return value


class CloudConfig(BaseModel):
    """Supabase Storage upload of each image (``cloud:``); absent means local files only."""

    model_config = ConfigDict(extra="forbid")

    url_env: str = Field(
        default="SUPABASE_URL",
        description="NAME of the env var holding the project URL (https://<ref>.supabase.co).",
    )
    key_env: str = Field(
        default="SUPABASE_SERVICE_ROLE_KEY",
        description="NAME of the env var holding the service role (or secret) key.",
    )
    bucket: str = Field(description="Storage bucket the images go to; it must exist.")
    path_template: str = Field(
        default=DEFAULT_PATH_TEMPLATE,
        description="Object path inside the bucket; must end with {filename}.",
    )
    url_mode: Literal["public", "signed"] = Field(
        default="signed",
        description="URL stored with the image: 'public' (public bucket) or 'signed' (expires).",
    )
    signed_url_expires_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="Lifetime of signed URLs in seconds."
    )
    owner_user_id: str | None = Field(
        default=None,
        description="Owner (auth user uuid) of images whose request names none.",
    )
    cache_control_s: int = Field(
        default=365 * 24 * 3600, ge=0, description="Cache-Control max-age of image objects."
    )
    upload_sidecar: bool = Field(
        default=True, description="Upload <image>.json next to the image object."
    )
    timeout_s: float = Field(default=30.0, gt=0, description="Timeout of each Storage request.")

    @field_validator("url_env", "key_env")
    @classmethod
    def _check_env_name(cls, value: str, info: ValidationInfo) -> str:
        if not is_env_var_name(value):
            # ConfigError passes through pydantic unchanged, so the value is never echoed.
            raise ConfigError(
                f"cloud.{info.field_name}: must be the NAME of an environment variable "
                "(A-Z, 0-9, _), never the URL or key itself"
            )
        return value

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not value.strip() or "/" in value:
            raise ValueError("must be a bucket name without '/'")
        return value

    @field_validator("path_template")
    @classmethod
    def _check_path_template(cls, value: str) -> str:
        validate_path_template(value)
        return value

    @field_validator("owner_user_id")
    @classmethod
    def _check_owner(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(
                "must be a user uuid such as 00000000-0000-4000-8000-000000000001"
            ) from None


class BackendBudget(BaseModel):
    """Spending limit of one backend instance."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: float = Field(ge=0, description="Most this instance may spend per UTC day.")


class OwnerLimits(BaseModel):
    """Daily limits of one owner (the account of a web client) on one instance or overall."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: float | None = Field(
        default=None, ge=0, description="Most one owner's jobs may spend per UTC day."
    )
    daily_images: int | None = Field(
        default=None, ge=0, description="Most images one owner's jobs may make per UTC day."
    )


class PerOwnerBudget(OwnerLimits):
    """Limits per owner of ``imagen.jobs`` rows (``budget.per_owner``); off by default."""

    backends: dict[str, OwnerLimits] = Field(
        default_factory=dict,
        description="Per-instance limits per owner: instance name -> {daily_usd, daily_images}.",
    )


class BudgetConfig(BaseModel):
    """Daily spending limits (``budget:``), checked before each backend call."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: float | None = Field(
        default=None, ge=0, description="Most all backends together may spend per UTC day."
    )
    backends: dict[str, BackendBudget] = Field(
        default_factory=dict, description="Per-instance limits: instance name -> {daily_usd}."
    )
    per_owner: PerOwnerBudget = Field(
        default_factory=PerOwnerBudget,
        description="Limits for each owner of imagen.jobs rows (a web client's account), "
        "overall and per instance; they apply to queued jobs only. Off by default.",
    )

    @property
    def configured(self) -> bool:
        """True when any limit is set."""
        owner = self.per_owner
        return (
            self.daily_usd is not None
            or bool(self.backends)
            or owner.daily_usd is not None
            or owner.daily_images is not None
            or bool(owner.backends)
        )


class QueueConfig(BaseModel):
    """How the ``imagen.jobs`` queue shares the pipeline among owners (``queue:``)."""

    model_config = ConfigDict(extra="forbid")

    max_in_flight_per_owner: int | None = Field(
        default=2,
        ge=1,
        le=1000,
        description="Most jobs of one owner queued or running at once (rows without an "
        "owner count as one owner); null: no limit. The claim takes owners in turn.",
    )


class RetentionConfig(BaseModel):
    """How long finished Dagster runs and failed jobs' staging records are kept
    (``retention:``): the daily ``imagen_housekeeping_schedule`` and ``imagen housekeeping``
    delete what is older. Ages are a number and a unit: ``30d``, ``12h``, ``0s``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Whether the daily schedule deletes anything (imagen housekeeping always can).",
    )
    succeeded_runs: str = Field(
        default="30d",
        description="Age after which a successful run is deleted with its event log and "
        "compute logs (the image keeps its lineage in imagen.images and its sidecar).",
    )
    failed_runs: str = Field(
        default="90d", description="The same for failed and canceled runs, kept longer."
    )
    staging: str = Field(
        default="14d",
        description="Age after which the staged image and record of a job that ended "
        "(done, failed, canceled) are swept from the output folder's .imagen-staging.",
    )
    batch_size: int = Field(
        default=200,
        ge=1,
        le=10000,
        description="Runs deleted per batch (each batch is one query for old runs).",
    )

    @field_validator("succeeded_runs", "failed_runs", "staging")
    @classmethod
    def _check_age(cls, value: str, info: ValidationInfo) -> str:
        parse_age(value, f"retention.{info.field_name}")
        return value

    def age(self, field: Literal["succeeded_runs", "failed_runs", "staging"]) -> timedelta:
        """One of the ages as a duration."""
        return parse_age(getattr(self, field), f"retention.{field}")


class AlertsConfig(BaseModel):
    """Alerts to the operator through one webhook (``alerts:``); absent: no alerts.

    The webhook URL carries a token, so the file names only the env var holding it.
    """

    model_config = ConfigDict(extra="forbid")

    webhook_url_env: str = Field(
        default="IMAGEN_ALERT_WEBHOOK_URL",
        description="NAME of the env var holding the webhook URL (ntfy, Slack or Discord); "
        "unset: alerts are off.",
    )
    max_per_hour: int = Field(
        default=20,
        ge=1,
        le=3600,
        description="Most alerts sent per hour, all kinds together; the ones over it are held "
        "back and counted in the next alert sent.",
    )
    repeat_after_s: int = Field(
        default=3600,
        ge=60,
        le=7 * 24 * 3600,
        description="A one-shot event (fallback taken, budget used up, runs failing) is sent "
        "again at most this often; repeats in between are counted in the next one.",
    )
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=30,
        description="Timeout of each webhook request; a dead webhook never holds a run longer.",
    )

    @field_validator("webhook_url_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not is_env_var_name(value):
            # ConfigError passes through pydantic unchanged, so the value is never echoed.
            raise ConfigError(
                "alerts.webhook_url_env: must be the NAME of an environment variable "
                "(A-Z, 0-9, _), never the webhook URL itself"
            )
        return value


class ImagenConfig(BaseModel):
    """The whole ``imagen.yaml``."""

    model_config = ConfigDict(extra="forbid")

    default_backend: str = Field(
        default="mock", description="Backend instance used when none is named."
    )
    output: OutputConfig = Field(default_factory=OutputConfig)
    backends: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: dict(block) for name, block in DEFAULT_BACKENDS.items()},
        description="Backend instances: name -> {type, ...adapter fields}.",
    )
    cloud: CloudConfig | None = Field(
        default=None, description="Supabase Storage upload; absent: images stay local."
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    alerts: AlertsConfig | None = Field(
        default=None, description="Alerts to the operator through a webhook; absent: none."
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @model_validator(mode="after")
    def _check_fallbacks(self) -> ImagenConfig:
        for name, block in self.backends.items():
            fallback = block.get("fallback") if isinstance(block, dict) else None
            if not isinstance(fallback, list):
                continue
            for other in fallback:
                if other == name:
                    raise ConfigError(f"backends.{name}.fallback: {name!r} cannot be its own")
                if other not in self.backends:
                    raise ConfigError(
                        f"backends.{name}.fallback: {other!r} is not a configured backend; "
                        f"configured backends: {', '.join(sorted(self.backends))}"
                    )
        return self

    @model_validator(mode="after")
    def _check_budget_backends(self) -> ImagenConfig:
        for section, names in (
            ("budget.backends", self.budget.backends),
            ("budget.per_owner.backends", self.budget.per_owner.backends),
        ):
            unknown = sorted(set(names) - set(self.backends))
            if unknown:
                raise ConfigError(
                    f"{section}.{unknown[0]}: not a configured backend; "
                    f"configured backends: {', '.join(sorted(self.backends))}"
                )
        return self

"""A row of ``imagen.jobs`` and the request it describes.

Every request column is written by a web client and so is untrusted: :class:`JobRow` holds
the columns as the database returns them (``backend_opts`` as JSON text, parsed only here),
and :meth:`JobRow.to_spec` turns them into a validated request or raises
:class:`~imagen_pipeline.errors.InvalidRequestError` naming the field. Reading a row never
raises for its content, so one bad row cannot stop a batch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict

from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline.generate.planning import ImageSpec, RequestFields, parse_backend_opts

JobStatus = Literal["pending", "queued", "running", "done", "failed", "canceled"]
MAX_ATTEMPTS = 3
"""How many runs a row may be handed to; equals the database's ``imagen.max_attempts()``.
A run lost to an outage gives its attempt back (:data:`MAX_INTERRUPTIONS`)."""
MAX_INTERRUPTIONS = 10
"""How many runs of a row may be lost to outages before it fails (a request that brings its
own worker down must not loop for ever); equals ``imagen.max_interruptions()``."""
ERROR_MAX_CHARS = 2000
"""Longest text stored in ``imagen.jobs.error``."""
_COLUMNS = (
    "id",
    "owner_user_id",
    "prompt",
    "negative",
    "style",
    "backend",
    "width",
    "height",
    "steps",
    "seed",
    "backend_opts::text AS backend_opts_json",
    "source_images",
    "mask",
    "mode",
    "strength",
    "status",
    "error",
    "run_id",
    "image_id",
    "attempts",
    "interruptions",
    "claims",
    "retry_at",
    "priority",
    "count",
    "progress",
    "progress_text",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
)


def job_columns(alias: str = "") -> str:
    """The select list that :meth:`JobRow.from_db` reads, optionally qualified by ``alias``."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{column}" for column in _COLUMNS)


class JobRow(RequestFields):
    """One ``imagen.jobs`` row as the pipeline reads it: the request's columns and the
    lifecycle columns the pipeline writes."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    owner_user_id: str | None = None
    backend_opts_json: str = "{}"
    source_images: list[Any] = []
    """``imagen.images`` ids to start from, as the database returns them: its rules allow
    only the owner's, but a row written past them may hold empty entries or a nested array,
    which :meth:`to_spec` refuses."""
    mask: int | None = None
    mode: str | None = None
    strength: float | None = None
    status: JobStatus
    error: str | None = None
    run_id: str | None = None
    image_id: int | None = None
    attempts: int = 0
    """Attempts the job's own requests used (at most :data:`MAX_ATTEMPTS`)."""
    interruptions: int = 0
    """Runs lost to outages (their attempts given back)."""
    claims: int = 0
    """How many times the job was claimed: the number its current runs carry."""
    retry_at: datetime | None = None
    """Not claimed before this time (set when a run was lost to an outage)."""
    priority: int = 0
    count: int = 1
    progress: float | None = None
    progress_text: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_db(cls, record: dict[str, Any]) -> JobRow:
        """Build from a psycopg dict row of :func:`job_columns` (uuid values become strings)."""
        values = dict(record)
        if values.get("owner_user_id") is not None:
            values["owner_user_id"] = str(values["owner_user_id"])
        return cls.model_validate(values)

    def to_spec(self) -> ImageSpec:
        """The generation request this row asks for; raises for a malformed column."""
        return ImageSpec(
            **{**self.request_fields(), "style": self.style or "none"},
            backend_opts=parse_backend_opts(self.backend_opts_json),
            source_images=source_image_ids(self.source_images),
            mask=None if self.mask is None else str(self.mask),
            mode=self.mode,
            strength=self.strength,
            job_id=self.id,
            job_attempt=self.claims,
            owner_user_id=self.owner_user_id,
            priority=self.priority,
        )


def source_image_ids(values: list[Any]) -> list[str]:
    """The row's ``source_images`` as the request's ids; raises, naming the entry, for an
    empty entry or a nested array (only a row written past the database's rules holds one)."""
    ids = []
    for position, value in enumerate(values):
        if isinstance(value, list):
            raise InvalidRequestError(
                "source_images", "must be a flat list of image ids (got a nested array)"
            )
        if value is None:
            raise InvalidRequestError(
                f"source_images[{position}]", "is empty; name an image by its id"
            )
        ids.append(str(value))
    return ids

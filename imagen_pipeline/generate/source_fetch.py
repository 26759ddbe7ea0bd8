"""Fetching a request's source images: each one from where the pipeline keeps it, never from
a URL a client gives.

An ``imagen.images`` id is read from the row's local file when it is still there with the
row's sha256, else from its Supabase Storage object with the service key (``cloud:``); a web
client's request may name only its owner's images (the database refuses others at insert,
this checks again when the job runs). An absolute path (the operator's requests only) is
read as it is, and linked to the image row with the same sha256 when there is one. Every
source is checked (:func:`~imagen_pipeline.generate.sources.check_source_bytes`) and staged
before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from imagen_pipeline.atomic_files import sha256_file
from imagen_pipeline.backends.sources import SourceImage
from imagen_pipeline.db.errors import DatabaseStep, database_errors
from imagen_pipeline.errors import (
    SEE_THE_RUN,
    ConfigError,
    InvalidRequestError,
    MaybeTransientError,
)
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.source_refs import SourceRef, source_references
from imagen_pipeline.generate.sources import (
    check_size,
    check_source_bytes,
    discard_sources,
    read_local_file,
    stage_source,
)
from imagen_pipeline.storage.errors import CloudSyncError

Connect = Callable[[], psycopg.Connection]


class SourceFetchError(MaybeTransientError):
    """A source image the request may name could not be fetched (Storage away, or its
    stored copy no longer matches its row); what a web user reads has no paths and no
    server names."""

    public_transient = "a source image could not be fetched right now; no image was made"
    public_summary = f"a source image could not be fetched; no image was made; {SEE_THE_RUN}"


@dataclass(frozen=True)
class ImageRow:
    """What fetching needs of an ``imagen.images`` row."""

    id: int
    owner_user_id: str | None
    sha256: str
    bytes: int
    storage_bucket: str | None
    storage_path: str | None
    local_path: str | None
    run_id: str


def image_rows(conn: psycopg.Connection, ids: list[int]) -> dict[int, ImageRow]:
    """The rows of ``ids`` that exist."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            """
            SELECT id, owner_user_id::text AS owner_user_id, sha256, bytes, storage_bucket,
                   storage_path, metadata->>'local_path' AS local_path, run_id
              FROM imagen.images WHERE id = ANY(%s)
            """,
            (ids,),
        )
        rows: list[dict[str, Any]] = cursor.fetchall()
    return {row["id"]: ImageRow(**row) for row in rows}


def image_with_sha256(conn: psycopg.Connection, sha256: str) -> tuple[int, str] | None:
    """The first image row with these bytes (its id and run), if any."""
    row = conn.execute(
        "SELECT id, run_id FROM imagen.images WHERE sha256 = %s ORDER BY id LIMIT 1", (sha256,)
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def check_client_owns_sources(conn: psycopg.Connection, plan: GenerationPlan) -> None:
    """A web client's row names only its owner's images: raise for the first other one,
    with the sentence the generate step would write, so such a row fails before a run
    (rows a client inserts are refused by the database already; this covers rows written
    past it). The generate step checks again when it fetches the sources."""
    spec = plan.spec
    if not spec.from_client:
        return
    refs = source_references(spec.source_images, spec.mask, from_client=True)
    rows = image_rows(conn, [ref.image_id for ref in refs if ref.image_id is not None])
    for ref in refs:
        if ref.image_id is None:
            continue
        row = rows.get(ref.image_id)
        if row is None or row.owner_user_id != spec.owner_user_id:
            raise InvalidRequestError(ref.field, f"image {ref.image_id} is not one of your images")


def attach_sources(plan: GenerationPlan, run_id: str, connect: Connect | None) -> GenerationPlan:
    """``plan`` with its request's source images (and mask) fetched, checked and staged;
    the plan itself when it names none. Raises, with the field named, before anything is
    sent; what was staged before a failure is removed again."""
    spec = plan.spec
    refs = source_references(spec.source_images, spec.mask, from_client=spec.from_client)
    if not refs:
        return plan
    staged: list[SourceImage] = []
    try:
        with database_errors(DatabaseStep.SOURCES):
            rows = _rows_named(refs, connect)
            for ref in refs:
                if ref.image_id is not None:
                    staged.append(_from_row(ref, rows.get(ref.image_id), plan, run_id))
                else:
                    staged.append(_from_path(ref, plan, run_id, connect))
    except BaseException:
        discard_sources(plan.request.model_copy(update={"sources": staged}))
        raise
    request = plan.request.model_copy(
        update={
            "sources": [source for source in staged if source.role == "source"],
            "mask": next((source for source in staged if source.role == "mask"), None),
        }
    )
    return plan.model_copy(update={"request": request})


def _rows_named(refs: list[SourceRef], connect: Connect | None) -> dict[int, ImageRow]:
    ids = [ref.image_id for ref in refs if ref.image_id is not None]
    if not ids:
        return {}
    if connect is None:
        raise ConfigError(
            f"{refs[0].field}: image ids name imagen.images rows, but no imagen database is "
            "configured (IMAGEN_DATABASE_URL); give a file path instead"
        )
    with connect() as conn:
        return image_rows(conn, ids)


def _from_row(
    ref: SourceRef, row: ImageRow | None, plan: GenerationPlan, run_id: str
) -> SourceImage:
    """The row's local file when it still holds the row's bytes, else its Storage object."""
    assert ref.image_id is not None
    spec = plan.spec
    if spec.from_client and (row is None or row.owner_user_id != spec.owner_user_id):
        raise InvalidRequestError(ref.field, f"image {ref.image_id} is not one of your images")
    if row is None:
        raise InvalidRequestError(ref.field, f"there is no image {ref.image_id} in imagen.images")
    check_size(ref.field, row.bytes)
    local = Path(row.local_path) if row.local_path else None
    if local is not None and local.is_file() and sha256_file(local) == row.sha256:
        data = read_local_file(ref.field, local)
        origin = f"imagen.images {row.id} (file {local})"
    else:
        data = _download(ref, row, plan)
        origin = f"imagen.images {row.id} (Storage {row.storage_bucket}/{row.storage_path})"
    checked = check_source_bytes(ref.field, data)
    if checked.sha256 != row.sha256:
        raise SourceFetchError(
            f"{ref.field}: image {row.id}'s bytes no longer match its recorded sha256"
        )
    return stage_source(
        ref,
        data,
        checked,
        origin,
        plan.output.path,
        run_id,
        image_id=row.id,
        parent_run_id=row.run_id,
    )


def _download(ref: SourceRef, row: ImageRow, plan: GenerationPlan) -> bytes:
    """The row's Storage object, read with the service key of ``cloud:``."""
    if not (row.storage_bucket and row.storage_path) or plan.cloud is None:
        raise SourceFetchError(
            f"{ref.field}: image {row.id} has no local file with its bytes here and no "
            "Storage object this server can read (cloud:)"
        )
    from imagen_pipeline.storage.client import SupabaseStorage

    try:
        with SupabaseStorage.from_config(plan.cloud) as storage:
            return storage.download(row.storage_bucket, row.storage_path)
    except CloudSyncError as error:
        raise SourceFetchError(f"{ref.field}: {error}", transient=error.transient) from None


def _from_path(
    ref: SourceRef, plan: GenerationPlan, run_id: str, connect: Connect | None
) -> SourceImage:
    """An operator's local file, linked to the image row with its bytes when there is one."""
    assert ref.path is not None
    path = Path(ref.path)
    data = read_local_file(ref.field, path)
    checked = check_source_bytes(ref.field, data)
    known = None
    if connect is not None:
        with connect() as conn:
            known = image_with_sha256(conn, checked.sha256)
    return stage_source(
        ref,
        data,
        checked,
        f"file {path}",
        plan.output.path,
        run_id,
        image_id=known[0] if known else None,
        parent_run_id=known[1] if known else None,
    )

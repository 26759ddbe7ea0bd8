"""Object paths in Supabase Storage, rendered from ``cloud.path_template``.

Every field comes from facts fixed when the image was generated (never from the clock at
upload time), so a retried or re-executed step computes the same path again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from imagen_pipeline.naming.file_names import check_relative_template, render_template

DEFAULT_PATH_TEMPLATE = "{owner}/{date}/{filename}"
PATH_FIELDS: dict[str, str] = {
    "owner": "owner user uuid (the job's, else cloud.owner_user_id, else 'unowned')",
    "date": "UTC date the image was generated, YYYY-MM-DD",
    "filename": "local file name with extension",
    "run_id": "full id of the Dagster run that generated the image",
    "job_id": "imagen.jobs id (or 'nojob')",
    "backend": "backend instance name",
}
UNOWNED = "unowned"


def validate_path_template(template: str) -> None:
    """Raise ``ValueError`` naming the problem and the allowed fields."""
    if not template.endswith("{filename}"):
        raise ValueError("path template must end with {filename} (it carries the extension)")
    check_relative_template(template, "path", PATH_FIELDS, "the bucket")


def render_object_path(template: str, fields: Mapping[str, object]) -> str:
    """The object path for ``fields``; every component is reduced to ``[A-Za-z0-9._-]``."""
    validate_path_template(template)
    return str(render_template(template, fields, PATH_FIELDS))


def sidecar_object_path(image_path: str) -> str:
    """``owner/2026-11-24/cat.png`` -> ``owner/2026-11-24/cat.json``."""
    return str(PurePosixPath(image_path).with_suffix(".json"))

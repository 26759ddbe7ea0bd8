"""Object paths in Supabase Storage, rendered from ``cloud.path_template``.

Every field comes from facts fixed when the image was generated (never from the clock at
upload time), so a retried or re-executed step computes the same path again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from imagen_pipeline.output.naming import safe_component, template_fields

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
    if "\x00" in template or "\\" in template or template.startswith("/"):
        raise ValueError("path template must be relative, without NUL or backslashes")
    if any(part in ("", ".", "..") for part in template.split("/")):
        raise ValueError("path template must not contain empty, '.' or '..' path components")
    try:
        names = template_fields(template)
    except ValueError as error:
        raise ValueError(f"path template is not valid: {error}") from None
    unknown = [name for name in names if name not in PATH_FIELDS]
    if unknown:
        raise ValueError(
            f"unknown path field {{{unknown[0]}}}; allowed fields: "
            + ", ".join(f"{{{name}}}" for name in PATH_FIELDS)
        )


def render_object_path(template: str, fields: Mapping[str, object]) -> str:
    """The object path for ``fields``; every component is reduced to ``[A-Za-z0-9._-]``."""
    validate_path_template(template)
    values = {name: safe_component(str(fields.get(name, ""))) for name in PATH_FIELDS}
    rendered = template.format(**values)
    return str(PurePosixPath(*(safe_component(part) for part in rendered.split("/"))))


def sidecar_object_path(image_path: str) -> str:
    """``owner/2026-11-24/cat.png`` -> ``owner/2026-11-24/cat.json``."""
    return str(PurePosixPath(image_path).with_suffix(".json"))

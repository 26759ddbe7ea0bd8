"""Filename templates (``output.naming``) rendered into safe paths inside the output directory.

Every field value is reduced to ``[A-Za-z0-9._-]``; the template itself may contain ``/`` to
make sub-folders but never ``..``, an absolute path, a backslash or a NUL. The result is a
relative path whose components are safe on Linux, macOS and Windows.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from slugify import slugify

DEFAULT_NAMING = "{date}_{time}_{slug}_{seed}"
NAMING_FIELDS: dict[str, str] = {
    "date": "local date of generation, YYYY-MM-DD",
    "time": "local time of generation, HHMMSS",
    "datetime": "local date and time, YYYYMMDD-HHMMSS",
    "slug": "prompt as a short ASCII slug",
    "seed": "seed actually used (or 'noseed')",
    "backend": "backend instance name",
    "model": "model name",
    "style": "style preset",
    "run_id": "first 8 characters of the Dagster run id that generated the image",
    "job_id": "imagen.jobs id (or 'nojob')",
    "width": "image width",
    "height": "image height",
    "variation": "which image of a request for several (count), from 0",
}
SLUG_MAX_LENGTH = 48
COMPONENT_MAX_BYTES = 150
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}  # fmt: skip


def template_fields(template: str) -> list[str]:
    """Names of the ``{fields}`` used in ``template``."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"{{{name}}}: format specs and conversions are not supported")
        names.append(name)
    return names


def check_relative_template(
    template: str, kind: str, allowed: Mapping[str, str], base: str
) -> None:
    """Raise ``ValueError`` if ``template`` could leave ``base`` or names a field not in
    ``allowed``; ``kind`` ("naming", "path") names the template in the message."""
    if not template.strip():
        raise ValueError(f"{kind} template must not be empty")
    if "\x00" in template or "\\" in template:
        raise ValueError(f"{kind} template must not contain NUL or backslashes")
    if template.startswith("/") or re.match(r"^[A-Za-z]:", template):
        raise ValueError(f"{kind} template must be relative to {base}")
    if any(part in ("", ".", "..") for part in template.split("/")):
        raise ValueError(f"{kind} template must not contain empty, '.' or '..' path components")
    try:
        names = template_fields(template)
    except ValueError as error:
        raise ValueError(f"{kind} template is not valid: {error}") from None
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise ValueError(
            f"unknown {kind} field {{{unknown[0]}}}; allowed fields: "
            + ", ".join(f"{{{name}}}" for name in allowed)
        )


def render_template(
    template: str, fields: Mapping[str, object], allowed: Mapping[str, str]
) -> PurePosixPath:
    """``template`` (already checked) rendered with ``fields``; every component made safe."""
    values = {name: safe_component(str(fields.get(name, ""))) for name in allowed}
    rendered = template.format(**values)
    return PurePosixPath(*(safe_component(part) for part in rendered.split("/")))


def validate_template(template: str) -> None:
    """Raise ``ValueError`` naming the problem and the allowed fields if ``template`` is unsafe."""
    check_relative_template(template, "naming", NAMING_FIELDS, "output.directory")


def slug_for(prompt: str) -> str:
    """Short ASCII slug of the prompt (non-Latin scripts transliterated); 'image' if empty."""
    slug = slugify(prompt, max_length=SLUG_MAX_LENGTH, word_boundary=True, save_order=True)
    return safe_component(slug) if slug else "image"


def safe_component(value: str) -> str:
    """One path component made of ``[A-Za-z0-9._-]``, never reserved, hidden or too long."""
    cleaned = _UNSAFE.sub("-", value).strip("-. ")
    cleaned = re.sub(r"-{2,}", "-", cleaned)[:COMPONENT_MAX_BYTES].rstrip("-. ")
    if not cleaned:
        return "image"
    if cleaned.split(".")[0].lower() in _WINDOWS_RESERVED:
        cleaned = f"{cleaned}_"
    return cleaned


def render_name(template: str, fields: Mapping[str, object]) -> PurePosixPath:
    """Render ``template`` into a relative path; every component is made safe."""
    validate_template(template)
    return render_template(template, fields, NAMING_FIELDS)


def resolve_inside(directory: Path, relative: PurePosixPath) -> Path:
    """``directory / relative``, refusing anything that would land outside ``directory``."""
    base = directory.resolve()
    target = base.joinpath(*relative.parts).resolve()
    if not target.is_relative_to(base) or target == base:
        raise ValueError(f"rendered name {str(relative)!r} escapes the output directory {base}")
    return target

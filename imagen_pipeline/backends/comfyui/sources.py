"""Source images on ComfyUI: what a workflow takes, and the uploads a request needs.

A workflow takes one source image when it maps ``image`` to a LoadImage node; the file is
uploaded under a name made of its sha256 (``imagen-<sha256>.png``), so a retry, or another
request with the same image, finds it on the server instead of writing a copy.

Limits: ComfyUI takes uploads up to ``--max-upload-size`` (100 MB by default, server.py
``client_max_size``, v0.8.0) and LoadImage opens any format Pillow reads; the pipeline's own
limits (25 MB, 4096x4096 pixels, PNG/JPEG/WEBP) are the tighter ones and apply as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagen_pipeline.backends.comfyui.workflow import Target, Workflow
from imagen_pipeline.backends.contract import GenerationRequest
from imagen_pipeline.backends.sources import NO_SOURCES, SourceSupport

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
"""File endings of the uploaded names, by MIME type."""


@dataclass(frozen=True)
class Upload:
    """A source image to put in the server's input folder before the prompt is queued, and
    the LoadImage inputs that read it."""

    path: Path
    name: str
    """Content-addressed (``imagen-<sha256>.png``): a retry finds it there, never a copy."""
    mime: str
    targets: tuple[Target, ...]


def source_support(workflow: Workflow) -> SourceSupport:
    """One source image when ``image`` is mapped: mode img2img when ``strength`` is mapped
    too (a sampler's denoise), else edit (a Kontext-style workflow); no mask."""
    if not workflow.source_targets():
        return NO_SOURCES
    mode = "img2img" if "strength" in workflow.inputs else "edit"
    return SourceSupport(max_images=1, modes=(mode,), default_mode=mode)


def upload_name(sha256: str, mime: str) -> str:
    """``imagen-<sha256>.png``: the same bytes always get the same name."""
    return f"imagen-{sha256}.{EXTENSIONS.get(mime, 'png')}"


def uploads_for(workflow: Workflow, request: GenerationRequest) -> tuple[Upload, ...]:
    """The request's source image as an upload into the workflow's LoadImage inputs."""
    if not request.sources:
        return ()
    source = request.sources[0]
    return (
        Upload(
            path=Path(source.path),
            name=upload_name(source.sha256, source.mime),
            mime=source.mime,
            targets=workflow.source_targets(),
        ),
    )

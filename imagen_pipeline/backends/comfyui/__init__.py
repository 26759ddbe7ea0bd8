"""The ComfyUI backend: workflows on the user's own GPU box (see docs/backends.md)."""

from imagen_pipeline.backends.comfyui.backend import ComfyUIBackend

__all__ = ["ComfyUIBackend"]

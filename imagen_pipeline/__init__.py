"""imagen_pipeline: model-agnostic image generation as a Dagster pipeline."""

__version__ = "0.1.0"

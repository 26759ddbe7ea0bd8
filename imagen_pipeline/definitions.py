"""Dagster definitions for imagen_pipeline."""

import dagster as dg

from imagen_pipeline.defs.jobs import generate_image
from imagen_pipeline.defs.resources import ImagenResource

defs = dg.Definitions(
    jobs=[generate_image],
    resources={"imagen": ImagenResource()},
)

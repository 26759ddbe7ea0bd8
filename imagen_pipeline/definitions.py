"""Dagster definitions for imagen_pipeline."""

import dagster as dg

from imagen_pipeline.defs.jobs import generate_image
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource
from imagen_pipeline.defs.sensors import imagen_jobs_sensor

defs = dg.Definitions(
    jobs=[generate_image],
    sensors=[imagen_jobs_sensor],
    resources={"imagen": ImagenResource(), "imagen_db": ImagenDatabaseResource()},
)

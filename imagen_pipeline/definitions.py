"""Dagster definitions for imagen_pipeline."""

import dagster as dg

from imagen_pipeline.defs.assets import ASSET_SPECS
from imagen_pipeline.defs.jobs import BACKEND_RESOURCES, generate_image
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource
from imagen_pipeline.defs.sensors import build_imagen_jobs_sensor, sensor_interval_s

defs = dg.Definitions(
    assets=ASSET_SPECS,
    jobs=[generate_image],
    sensors=[build_imagen_jobs_sensor(sensor_interval_s())],
    resources={
        "imagen": ImagenResource(),
        "imagen_db": ImagenDatabaseResource(),
        **BACKEND_RESOURCES,
    },
)

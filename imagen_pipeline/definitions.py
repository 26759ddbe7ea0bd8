"""Dagster definitions for imagen_pipeline, built when the code location loads (never at
import): the job and its resources bound from ``imagen.yaml`` as it is then, the jobs
sensor and the alerts sensor set up from the environment, the asset specs. The module holds
nothing else (no job or asset at module level), so every loader finds only ``defs``."""

import dagster as dg

from imagen_pipeline.defs import alert_sensors, assets, housekeeping, jobs, resources, sensors


@dg.definitions
def defs() -> dg.Definitions:
    """The code location: ``generate_image``, ``imagen_jobs_sensor``, ``imagen_alerts_sensor``,
    the ``housekeeping`` job and its daily schedule, the asset specs, and the resources of
    ``imagen.yaml`` (see :mod:`imagen_pipeline.defs.resources`)."""
    bound = {**resources.load_resources(), "imagen_db": resources.ImagenDatabaseResource()}
    housekeeping_job = housekeeping.build_housekeeping_job()
    return dg.Definitions(
        assets=assets.ASSET_SPECS,
        jobs=[jobs.build_generate_image_job(resources=bound), housekeeping_job],
        schedules=[housekeeping.build_housekeeping_schedule(housekeeping_job)],
        sensors=[
            sensors.build_imagen_jobs_sensor(sensors.sensor_interval_s()),
            alert_sensors.build_alerts_sensor(),
        ],
        resources=bound,
    )

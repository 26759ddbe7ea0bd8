"""A reconstructable ``generate_image`` for tests that launch runs in other processes.

Dagster re-imports it from its file path in the run worker, so it imports nothing from the
test package.
"""

import dagster as dg

from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.resources import load_resources


def generate_image_job() -> dg.JobDefinition:
    """The deployed job without retry backoff."""
    return build_generate_image_job(retry_delay_s=0)


def deployed_job() -> dg.JobDefinition:
    """The job with its resources bound from imagen.yaml as found when it is loaded
    (``$IMAGEN_CONFIG``), as the code location binds them."""
    return build_generate_image_job(retry_delay_s=0, resources=load_resources())

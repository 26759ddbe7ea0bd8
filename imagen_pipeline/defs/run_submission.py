"""Submitting ``generate_image`` runs through the Dagster webserver's GraphQL API.

Used by the NOTIFY fast path (``imagen queue listen``). The run carries the same run
config and tags as a sensor-launched run, so the UI, the jobs sensor's reconciliation and
the ops treat both alike; ``imagen/source`` tells them apart.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from dagster_graphql import DagsterGraphQLClient

from imagen_pipeline.defs.job_runs import run_config_for, run_tags_for
from imagen_pipeline.generate.plan import GenerationPlan
from imagen_pipeline.queue.rows import JobRow

JOB_NAME = "generate_image"
LOCATION_NAME = "imagen_pipeline"
REPOSITORY_NAME = "__repository__"
SOURCE_LISTENER = "imagen.jobs/notify"


class GraphQLRunSubmitter:
    """Submits runs to the webserver at ``webserver_url`` (e.g. http://127.0.0.1:3000)."""

    def __init__(self, webserver_url: str, timeout_s: int = 30) -> None:
        parts = urlsplit(webserver_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"webserver URL must look like http://host:3000, got {webserver_url!r}"
            )
        self.client = DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            timeout=timeout_s,
            path_prefix=parts.path.rstrip("/"),
        )

    def submit(self, row: JobRow, plan: GenerationPlan) -> str:
        """Queue the row's run in the instance (the daemon's run queue starts it)."""
        tags = run_tags_for(plan, SOURCE_LISTENER)
        return self.client.submit_job_execution(
            JOB_NAME,
            repository_location_name=LOCATION_NAME,
            repository_name=REPOSITORY_NAME,
            run_config=run_config_for(plan).to_config_dict(),
            tags=tags,
        )

"""The ``generate_image`` job: the graph plus retry policy, executor and resources."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg

from imagen_pipeline.defs.backend_resources import BackendResource, load_backend_resources
from imagen_pipeline.defs.failures import MAX_RETRIES
from imagen_pipeline.defs.ops import (
    build_enrich_prompt,
    cloud_sync,
    generate_cloud,
    generate_gpu,
    record_usage,
    write_files,
)
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource

GENERATE_RETRY_DELAY_S = 2.0

BACKEND_RESOURCES = load_backend_resources()
"""The backend instances of imagen.yaml as the code location loaded it, as resources."""


def build_generate_image_graph(backend_keys: Iterable[str]) -> dg.GraphDefinition:
    """The graph, whose first step uses the backend resources ``backend_keys``."""
    enrich_prompt = build_enrich_prompt(backend_keys)

    @dg.graph(
        name="generate_image_graph",
        description="Enrich the prompt, generate, write image + sidecar, sync, record usage.",
    )
    def generate_image_graph() -> None:
        """One image: enrich_prompt -> generate_{gpu|cloud} -> write_files -> cloud_sync ->
        record_usage. The plan takes the branch of its backend's pool; the other is
        skipped."""
        gpu_plan, cloud_plan = enrich_prompt()
        stored = write_files([generate_gpu(gpu_plan), generate_cloud(cloud_plan)])
        synced = cloud_sync(stored)
        record_usage(stored, synced)

    return generate_image_graph


def build_generate_image_job(
    retry_delay_s: float = GENERATE_RETRY_DELAY_S,
    backends: Mapping[str, BackendResource] | None = None,
) -> dg.JobDefinition:
    """The job as deployed; tests pass ``retry_delay_s=0`` to skip backoff waits.

    ``backends``: the backend resources to bind (default: imagen.yaml's, as loaded with the
    code location); a test may bind its own, or pass them to ``execute_in_process``.

    Retries: exponential backoff with jitter for errors classified transient; permanent
    errors raise ``Failure(allow_retries=False)`` and stop after one attempt. Executor:
    in-process (measured faster for this 5-op chain, see docs/benchmarks.md).
    """
    backends = BACKEND_RESOURCES if backends is None else backends
    return build_generate_image_graph(backends).to_job(
        name="generate_image",
        description="Generate one image with the configured backend and record its lineage.",
        op_retry_policy=dg.RetryPolicy(
            max_retries=MAX_RETRIES,
            delay=retry_delay_s,
            backoff=dg.Backoff.EXPONENTIAL,
            jitter=dg.Jitter.PLUS_MINUS,
        ),
        executor_def=dg.in_process_executor,
        resource_defs={
            "imagen": ImagenResource(),
            "imagen_db": ImagenDatabaseResource(),
            **backends,
        },
    )


generate_image = build_generate_image_job()

"""The ``generate_image`` job: the graph plus retry policy, executor and resources.

The job is the same whatever ``imagen.yaml`` holds: its resources sit under fixed keys
(``imagen``, ``backends``, ``imagen_db``), and their values are bound by the code location
(:mod:`imagen_pipeline.definitions`), by ``imagen generate`` or by a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from imagen_pipeline.defs.failures import MAX_RETRIES
from imagen_pipeline.defs.generate_ops import generate_cloud, generate_gpu
from imagen_pipeline.defs.ops import cloud_sync, enrich_prompt, record_usage, write_files
from imagen_pipeline.defs.resources import (
    BackendsResource,
    ImagenDatabaseResource,
    ImagenResource,
)

GENERATE_RETRY_DELAY_S = 2.0


@dg.graph(
    name="generate_image_graph",
    description="Enrich the prompt, generate, write image + sidecar, sync, record usage.",
)
def generate_image_graph() -> None:
    """One request: enrich_prompt -> generate_{gpu|cloud} -> write_files -> cloud_sync ->
    record_usage. The plan takes the branch of its backend's pool; the other is skipped."""
    gpu_plan, cloud_plan = enrich_prompt()
    stored = write_files([generate_gpu(gpu_plan), generate_cloud(cloud_plan)])
    synced = cloud_sync(stored)
    record_usage(stored, synced)


def build_generate_image_job(
    retry_delay_s: float = GENERATE_RETRY_DELAY_S, resources: Mapping[str, Any] | None = None
) -> dg.JobDefinition:
    """The job as deployed; tests pass ``retry_delay_s=0`` to skip backoff waits.

    Retries: exponential backoff with jitter for errors classified transient; permanent
    errors raise ``Failure(allow_retries=False)`` and stop after one attempt. Executor:
    in-process (measured faster for this 5-op chain, see docs/benchmarks.md). Resources:
    ``resources`` (the code location binds those of imagen.yaml), else empty settings and
    no backend (a run then fails naming the missing backend) until a run config or
    ``execute_in_process(resources=...)`` binds them.
    """
    return generate_image_graph.to_job(
        name="generate_image",
        description="Generate images with a configured backend and record their lineage.",
        op_retry_policy=dg.RetryPolicy(
            max_retries=MAX_RETRIES,
            delay=retry_delay_s,
            backoff=dg.Backoff.EXPONENTIAL,
            jitter=dg.Jitter.PLUS_MINUS,
        ),
        executor_def=dg.in_process_executor,
        resource_defs={
            "imagen": ImagenResource(),
            "backends": BackendsResource(),
            "imagen_db": ImagenDatabaseResource(),
            **(resources or {}),
        },
    )

"""Ops of the ``generate_image`` graph: enrich_prompt -> generate (:mod:`.generate_ops`) ->
write_files -> cloud_sync -> record_usage. A run makes the request's ``count`` images
(variations), so every step after enrich_prompt hands on a list, one item per image.

Wiring only: each op calls one plain module and hands its errors to
:func:`~imagen_pipeline.defs.failures.step_errors`. The first op resolves the run into its
plan (:func:`imagen_pipeline.generate.plan`) from the ``imagen`` and ``backends``
resources; later ops read the plan and the previous step's small result. Ops pass pydantic
values and file paths, never image bytes.
"""

from collections.abc import Iterator

import dagster as dg

from imagen_pipeline import generate
from imagen_pipeline.cloud.sync import SyncOutcome, sync_image
from imagen_pipeline.db.errors import DatabaseStep, database_errors
from imagen_pipeline.defs.failures import step_errors
from imagen_pipeline.defs.generate_ops import job_progress
from imagen_pipeline.defs.lineage import (
    image_materialization,
    parent_materialization_times,
    row_materializations,
    storage_materialization,
)
from imagen_pipeline.defs.resources import (
    BackendsResource,
    ImagenDatabaseResource,
    ImagenResource,
)
from imagen_pipeline.defs.run_config import GenerateImageConfig
from imagen_pipeline.defs.run_identity import POOLS, own_job, run_tags, tag_run
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.staging import GeneratedImage
from imagen_pipeline.output.store import StoredImage, store_image
from imagen_pipeline.usage.recorder import (
    UsageOutcome,
    record_images,
)


@dg.op(
    tags={"kind": "prompt"},
    out={
        kind: dg.Out(GenerationPlan, is_required=False, description=f"Plan for the {pool} pool.")
        for kind, pool in POOLS.items()
    },
)
def enrich_prompt(
    context: dg.OpExecutionContext,
    config: GenerateImageConfig,
    imagen: ImagenResource,
    backends: BackendsResource,  # type: ignore[valid-type]
) -> Iterator[dg.Output[GenerationPlan]]:
    """Validate the request, apply the style preset and resolve the run's plan from the
    ``imagen`` and ``backends`` resources.

    The plan leaves on the output of the backend's pool (``gpu`` or ``cloud``), so exactly
    one of the two generate steps runs and the other is skipped.
    """
    with step_errors(context):
        plan = generate.plan(config.to_spec(), imagen.setup(backends))
    tag_run(context, run_tags(plan))
    context.log.info(
        f"backend {plan.backend} ({plan.backend_type}, {plan.model}), style "
        f"{plan.request.style}, {plan.request.width}x{plan.request.height}; "
        f"prompt: {plan.request.prompt}"
    )
    yield dg.Output(plan, output_name=plan.pool)


@dg.op(tags={"kind": "files"}, ins={"generated": dg.In(list[list[GeneratedImage]])})
def write_files(
    context: dg.OpExecutionContext,
    generated: list[list[GeneratedImage]],
    imagen_db: ImagenDatabaseResource,
) -> list[StoredImage]:
    """Move each staged image to its final name, write its sidecar, record its
    materialization.

    ``generated`` is the fan-in of both generate steps; exactly one of them ran.
    """
    (images,) = generated
    _stage(context, images[0].plan, imagen_db, "writing files")
    stored = []
    for image in images:
        output = image.plan.output
        with step_errors(context):
            item = store_image(
                image, output.path, output.naming, output.write_metadata_json, context.run_id
            )
        parents = parent_materialization_times(context.instance, item)
        context.log_event(image_materialization(item, parents))
        context.log.info(f"wrote {item.image_path}")
        stored.append(item)
    return stored


@dg.op(tags={"kind": "cloud"})
def cloud_sync(
    context: dg.OpExecutionContext, stored: list[StoredImage], imagen_db: ImagenDatabaseResource
) -> list[SyncOutcome]:
    """Upload each image and its sidecar to Supabase Storage, when ``cloud:`` is configured.

    Unreachable Storage is retried by the retry policy; a missing bucket, a rejected key or
    a path held by another image fails at once with the reason.
    """
    plan = stored[0].generated.plan
    if plan.cloud is not None:
        _stage(context, plan, imagen_db, "uploading")
    outcomes = []
    for item in stored:
        with step_errors(context):
            outcome = sync_image(item, item.generated.plan.cloud)
        if outcome.location is not None:
            context.log_event(storage_materialization(item, outcome.location))
        context.log.info(outcome.detail)
        outcomes.append(outcome)
    return outcomes


@dg.op(tags={"kind": "usage"})
def record_usage(
    context: dg.OpExecutionContext,
    stored: list[StoredImage],
    synced: list[SyncOutcome],
    imagen_db: ImagenDatabaseResource,
) -> UsageOutcome:
    """In one transaction: the ``imagen.images`` rows, the ``mai.imagen_usage`` rows and,
    for a queued job, its ``done`` (when a database is configured; a job done keeps no
    images for re-use)."""
    own_job(context, stored[0].generated.plan, imagen_db, finished_work=True)
    images = list(zip(stored, synced, strict=True))
    with (
        step_errors(context),
        database_errors(DatabaseStep.RECORDING, imagen_db.url_env),
    ):
        if imagen_db.configured():
            with imagen_db.connect() as conn:
                outcome = record_images(conn, images, context.run_id)
        else:
            outcome = record_images(None, images, context.run_id)
    if outcome.status == "recorded":
        for (item, sync), image_id in zip(images, outcome.image_ids, strict=True):
            url = sync.location.url if sync.location else None
            for materialization in row_materializations(item, image_id, url):
                context.log_event(materialization)
    context.log.info(outcome.detail)
    return outcome


def _stage(
    context: dg.OpExecutionContext,
    plan: GenerationPlan,
    imagen_db: ImagenDatabaseResource,
    stage: str,
) -> None:
    """Show a queued job's stage in its row."""
    progress = job_progress(plan, context.run_id, imagen_db)
    if progress is not None:
        progress.stage(stage)
        progress.close()

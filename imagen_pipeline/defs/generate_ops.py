"""The generate steps, ``generate_gpu`` and ``generate_cloud``: the same op in the two
Dagster op pools, over :func:`~imagen_pipeline.generate.making.make_images`, with each image's
lines in the run's log, a queued job's progress in its row and the operator's alerts."""

import dagster as dg

from imagen_pipeline.alerts.notify import open_alerts
from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.backends.progress import ProgressThrottle
from imagen_pipeline.cloud.sources import attach_sources
from imagen_pipeline.defs.failures import step_errors
from imagen_pipeline.defs.resources import ImagenDatabaseResource
from imagen_pipeline.defs.run_identity import POOLS, made_by_tags, own_job, tag_run
from imagen_pipeline.errors import BackendError
from imagen_pipeline.generate.making import make_images
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.sources import discard_sources
from imagen_pipeline.generate.staging import GeneratedImage
from imagen_pipeline.queue.progress import JobProgress
from imagen_pipeline.usage.recorder import record_failed_generation


def job_progress(
    plan: GenerationPlan, run_id: str, imagen_db: ImagenDatabaseResource
) -> JobProgress | None:
    """The row's progress writer for a queued job's run, else None."""
    if plan.spec.job_id is None or not imagen_db.configured():
        return None
    return JobProgress(imagen_db.connect, plan.spec.job_id, run_id, plan.spec.count)


def _generate_op(kind: str, pool: str) -> dg.OpDefinition:
    @dg.op(
        name=f"generate_{kind}",
        pool=pool,
        tags={"kind": "generate"},
        description=f"Generate with a backend of the {kind!r} pool (Dagster pool {pool}).",
    )
    def generate(
        context: dg.OpExecutionContext, plan: GenerationPlan, imagen_db: ImagenDatabaseResource
    ) -> list[GeneratedImage]:
        """Fetch and check the request's source images, then re-use the job's images or
        call the backend, one image per variation (``count``), and stage them; an image an
        earlier attempt made is not made again."""
        own_job(context, plan, imagen_db)
        connect = imagen_db.connect if imagen_db.configured() else None
        with step_errors(context):
            plan = attach_sources(plan, context.run_id, connect)
        for source in plan.request.sources:
            context.log.info(
                f"source image {source.position + 1}: {source.origin}, "
                f"{source.width}x{source.height}, sha256 {source.sha256[:12]}"
            )
        progress = job_progress(plan, context.run_id, imagen_db)
        try:
            return _make_variations(context, plan, imagen_db, progress)
        finally:
            discard_sources(plan.request)
            if progress is not None:
                progress.close()

    return generate


def _make_variations(
    context: dg.OpExecutionContext,
    plan: GenerationPlan,
    imagen_db: ImagenDatabaseResource,
    progress: JobProgress | None,
) -> list[GeneratedImage]:
    """The request's images, re-used or generated, with their lines in the run's log."""
    connect = imagen_db.connect if imagen_db.configured() else None
    alerts = open_alerts(plan.alerts, imagen_db.url())
    if plan.alerts is not None and not alerts.enabled:
        context.log.warning(alerts.describe())

    def label(variant: GenerationPlan) -> str:
        text = f"backend {variant.backend!r} ({variant.backend_type}): "
        if plan.spec.count > 1:
            text = f"image {variant.variation + 1}/{plan.spec.count}, {text}"
        return text

    def context_for(variant: GenerationPlan) -> GenerationContext:
        if progress is not None:
            progress.image(variant.variation)
        return GenerationContext(
            run_id=context.run_id,
            attempt=context.retry_number,
            instance_name=variant.backend,
            variation=variant.variation,
            log=context.log,
            progress=ProgressThrottle(
                context.log, label(variant).removesuffix(": "), (progress,) if progress else ()
            ),
        )

    def failed_call(failed: GenerationPlan, error: BackendError) -> None:
        if connect is not None:
            context.log.info(
                record_failed_generation(
                    connect, failed, context.run_id, context.retry_number, error
                )
            )

    images = []
    made_images = make_images(plan, context_for, connect, failed_call, alerts)
    for variant in plan.variations:
        with step_errors(context, backend=label(variant)):
            try:
                made = next(made_images)
            except BackendError as error:
                if error.transient:
                    context.log.warning(
                        f"{label(variant)}transient failure on attempt "
                        f"{context.retry_number + 1}: {error}"
                    )
                raise
        if made.budget_note:
            context.log.info(made.budget_note)
        context.log.info(("" if made.reused else label(variant)) + made.describe(variant))
        tag_run(context, made_by_tags(made.image))
        images.append(made.image)
    return images


generate_gpu = _generate_op("gpu", POOLS["gpu"])
generate_cloud = _generate_op("cloud", POOLS["cloud"])

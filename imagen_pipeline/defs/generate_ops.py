"""The generate steps, ``generate_gpu`` and ``generate_cloud``: the same op in the two
Dagster op pools, over :func:`imagen_pipeline.generate.make`, which runs the whole generate
path. The op adds what is Dagster's: the job row's ownership, the step's error rule, the
run's log and tags, and a queued job's progress in its row."""

import dagster as dg

from imagen_pipeline import generate
from imagen_pipeline.defs.failures import step_errors
from imagen_pipeline.defs.resources import ImagenDatabaseResource
from imagen_pipeline.defs.run_identity import POOLS, made_by_tags, own_job, tag_run
from imagen_pipeline.errors import BackendError
from imagen_pipeline.generate.planning import GenerationPlan
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
    def generate_step(
        context: dg.OpExecutionContext, plan: GenerationPlan, imagen_db: ImagenDatabaseResource
    ) -> list[GeneratedImage]:
        """Fetch and check the request's source images, then re-use the job's images or
        call the backend, one image per variation (``count``), and stage them; an image an
        earlier attempt made is not made again."""
        own_job(context, plan, imagen_db)
        progress = job_progress(plan, context.run_id, imagen_db)
        try:
            return generate.make(plan, _step(context, imagen_db, progress))
        finally:
            if progress is not None:
                progress.close()

    return generate_step


def _step(
    context: dg.OpExecutionContext,
    imagen_db: ImagenDatabaseResource,
    progress: JobProgress | None,
) -> generate.Step:
    """This op as the generate path sees it: its run and log, the step's error rule, the
    run's tags and the usage row of a failed call."""
    connect = imagen_db.connect if imagen_db.configured() else None

    def failed_call(failed: GenerationPlan, error: BackendError) -> None:
        if connect is not None:
            context.log.info(
                record_failed_generation(
                    connect, failed, context.run_id, context.retry_number, error
                )
            )

    return generate.Step(
        run_id=context.run_id,
        attempt=context.retry_number,
        log=context.log,
        connect=connect,
        alerts_database_url=imagen_db.url(),
        progress=progress,
        errors=lambda backend: step_errors(context, backend=backend),
        on_image=lambda image: tag_run(context, made_by_tags(image)),
        on_failed_call=failed_call,
    )


generate_gpu = _generate_op("gpu", POOLS["gpu"])
generate_cloud = _generate_op("cloud", POOLS["cloud"])

"""Which ``imagen.jobs`` row a run works for, the tags that index it, and whether it may act
for the row.

The run's plan is the one source: its request carries the job id, the attempt and the owner
(from the run config). Tags are an index derived from the plan, so the UI and the jobs
sensor can find a job's runs; they are never read back as facts about the run.
"""

from __future__ import annotations

import dagster as dg

from imagen_pipeline.backends.capacity import CLOUD_POOL, GPU_POOL
from imagen_pipeline.db.errors import DatabaseStep, database_errors
from imagen_pipeline.defs.failures import failure, step_errors
from imagen_pipeline.defs.resources import ImagenDatabaseResource
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.staging import GeneratedImage
from imagen_pipeline.queue.repository import take_ownership
from imagen_pipeline.run_tags import (
    GPU_QUEUE,
    TAG_BACKEND,
    TAG_CELERY_QUEUE,
    TAG_FALLBACK,
    TAG_JOB_ATTEMPT,
    TAG_JOB_ID,
    TAG_OWNER,
    TAG_POOL,
    TAG_PRIORITY,
    TAG_SERVER,
    TAG_STYLE,
)

POOLS = {"gpu": GPU_POOL, "cloud": CLOUD_POOL}
"""The backend's ``pool`` setting -> the Dagster pool of the generate step."""


def run_tags(plan: GenerationPlan) -> dict[str, str]:
    """The tags a run of ``plan`` carries: backend, style, pool, the GPU host's Celery queue
    for a GPU run and, for a job, its row and (when not 0) its priority."""
    tags = {
        TAG_BACKEND: plan.backend,
        TAG_STYLE: plan.request.style,
        TAG_POOL: POOLS[plan.pool],
    }
    if plan.pool == "gpu":
        tags[TAG_CELERY_QUEUE] = GPU_QUEUE
    spec = plan.spec
    if spec.job_id is not None:
        tags[TAG_JOB_ID] = str(spec.job_id)
        if spec.job_attempt is not None:
            tags[TAG_JOB_ATTEMPT] = str(spec.job_attempt)
        if spec.owner_user_id:
            tags[TAG_OWNER] = spec.owner_user_id
        if spec.priority:
            tags[TAG_PRIORITY] = str(spec.priority)
    return tags


def made_by_tags(generated: GeneratedImage) -> dict[str, str]:
    """Tags for where the image was made: the server, and the fallback if one made it."""
    tags = {}
    if generated.metadata.server:
        tags[TAG_SERVER] = generated.metadata.server
    if generated.plan.fell_back_from:
        tags[TAG_FALLBACK] = generated.plan.backend
    return tags


def tag_run(context: dg.OpExecutionContext, tags: dict[str, str]) -> None:
    """Add the tags the run does not carry yet (a launchpad run, a re-execution)."""
    missing = {key: value for key, value in tags.items() if context.run.tags.get(key) != value}
    if missing:
        context.instance.add_run_tags(context.run_id, missing)


def own_job(
    context: dg.OpExecutionContext,
    plan: GenerationPlan,
    imagen_db: ImagenDatabaseResource,
    *,
    finished_work: bool = False,
) -> None:
    """For a run of an imagen.jobs row: mark it running for this run, or stop this run.

    Checked where it matters: before the backend is called (a superseded run, a newer
    attempt, a canceled or finished row, never spends money or makes a second image) and in
    the recording step, whose commit marks the row done. A re-execution takes the row over
    from its parent there and gets the job's tags. ``finished_work``: see
    :func:`~imagen_pipeline.queue.repository.take_ownership`.
    """
    job_id = plan.spec.job_id
    if job_id is None:
        return
    if not imagen_db.configured():
        raise failure(f"run is for imagen.jobs row {job_id} but {imagen_db.url_env} is not set")
    step = DatabaseStep.RECORDING if finished_work else DatabaseStep.OWNERSHIP
    with (
        step_errors(context),
        database_errors(step, imagen_db.url_env),
        imagen_db.connect() as conn,
    ):
        ownership = take_ownership(
            conn,
            job_id,
            plan.spec.job_attempt,
            context.run_id,
            context.run.parent_run_id,
            finished_work=finished_work,
        )
    if not ownership.owned or ownership.row is None:
        raise failure(ownership.refusal(job_id, context.run_id))
    if context.run.tags.get(TAG_JOB_ID) != str(job_id):
        tag_run(context, {TAG_JOB_ID: str(job_id), TAG_JOB_ATTEMPT: str(ownership.row.claims)})

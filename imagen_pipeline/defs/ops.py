"""Ops of the ``generate_image`` graph: enrich_prompt -> generate -> write_files ->
cloud_sync -> record_usage.

Each op is a thin layer: it loads the config through :class:`ImagenResource`, calls a plain
module, turns expected errors into ``dagster.Failure`` and logs lineage. Ops pass small
pydantic values and file paths, never image bytes.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.cloud.errors import database_errors
from imagen_pipeline.cloud.sync import SyncOutcome, sync_image
from imagen_pipeline.defs.resources import ImagenDatabaseResource, ImagenResource
from imagen_pipeline.defs.run_errors import PUBLIC_ERROR_KEY
from imagen_pipeline.errors import BackendError, ImagenError, TransientBackendError
from imagen_pipeline.generation import GeneratedImage, discard_job_record, run_generation
from imagen_pipeline.output.preview import preview_markdown
from imagen_pipeline.output.store import StoredImage, find_job_generation, store_image
from imagen_pipeline.planning import (
    GenerationPlan,
    ImageSpec,
    parse_backend_opts,
    plan_generation,
)
from imagen_pipeline.prompts.styles import load_styles
from imagen_pipeline.queue.repository import take_ownership
from imagen_pipeline.usage.budget import check_budget
from imagen_pipeline.usage.recorder import (
    UsageOutcome,
    record_failed_generation,
    record_generation,
)

IMAGE_ASSET_KEY = dg.AssetKey(["imagen", "image"])
GENERATE_MAX_RETRIES = 3
TAG_BACKEND = "imagen/backend"
TAG_STYLE = "imagen/style"
TAG_JOB_ID = "imagen/job_id"
TAG_JOB_ATTEMPT = "imagen/job_attempt"
TAG_OWNER = "imagen/owner"
# The Dagster pool of the run's generate step; the run queue limits GPU runs by it.
TAG_POOL = "imagen/pool"


class GenerateImageConfig(dg.Config):
    """What to generate. Only ``prompt`` is required."""

    prompt: str = Field(description="What the image should show.")
    negative: str = Field(default="", description="What it should not show.")
    style: str = Field(
        default="none",
        description="Style preset: " + ", ".join(sorted(load_styles())) + ".",
    )
    backend: str = Field(
        default="", description="Backend instance from imagen.yaml; empty: default_backend."
    )
    width: int | None = Field(default=None, description="Width in pixels; empty: style default.")
    height: int | None = Field(default=None, description="Height in pixels; empty: style default.")
    steps: int | None = Field(default=None, description="Sampling steps; empty: backend default.")
    seed: int | None = Field(default=None, description="Seed; empty: the backend picks one.")
    backend_opts: str = Field(
        default="{}",
        description='Adapter-specific options as a JSON object, e.g. {"guidance": 3.5}; '
        "passed to the backend unchanged.",
    )
    job_id: int | None = Field(
        default=None, description="imagen.jobs row id; set by the jobs sensor, leave empty."
    )
    job_attempt: int | None = Field(
        default=None, description="Attempt of that row; set by the jobs sensor, leave empty."
    )
    owner_user_id: str | None = Field(
        default=None, description="Owner (auth user uuid); set by the jobs sensor, leave empty."
    )

    @classmethod
    def from_spec(cls, spec: ImageSpec) -> "GenerateImageConfig":
        """The run config of a request.

        ``backend_opts`` travels as JSON text, so Dagster's config system and serializer
        never read what a user wrote as structure (keys such as ``__class__``, null values).
        """
        return cls(**{**spec.model_dump(), "backend_opts": json.dumps(spec.backend_opts)})

    def to_spec(self) -> ImageSpec:
        """The plain-Python request this config describes; raises for bad ``backend_opts``."""
        return ImageSpec(
            **{**self.model_dump(), "backend_opts": parse_backend_opts(self.backend_opts)}
        )


def _failure(error: ImagenError | Exception | str, prefix: str = "") -> dg.Failure:
    """A failure that the retry policy does not retry.

    Its description is the full message (operators); its metadata carries the sentence a web
    user may read in ``imagen.jobs.error`` (:mod:`imagen_pipeline.defs.run_errors`).
    """
    public = error.public if isinstance(error, ImagenError) else None
    return dg.Failure(
        description=f"{prefix}{error}",
        metadata={PUBLIC_ERROR_KEY: public} if public else None,
        allow_retries=False,
    )


def _retry_or_fail(context: dg.OpExecutionContext, error: ImagenError, prefix: str = "") -> None:
    """Let the retry policy retry a transient error; after the last retry, fail with it."""
    if context.retry_number >= GENERATE_MAX_RETRIES:
        raise _failure(error, prefix) from None
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after:
        raise dg.RetryRequested(
            max_retries=GENERATE_MAX_RETRIES, seconds_to_wait=retry_after
        ) from error
    raise error


def _own_job(
    context: dg.OpExecutionContext,
    plan: GenerationPlan,
    imagen_db: ImagenDatabaseResource,
    *,
    finished_work: bool = False,
) -> None:
    """For a run of an imagen.jobs row: mark it running for this run, or stop this run.

    Called by every op that acts on the row's behalf, so a superseded run (a newer attempt,
    a canceled or finished row) stops before it can make a second image. A re-execution
    that takes the row over from its parent run gets the job's tags, so it is found by
    them like any other run of the job. ``finished_work``: see :func:`take_ownership`.
    """
    job_id = plan.spec.job_id
    if job_id is None:
        return
    if not imagen_db.configured():
        raise _failure(f"run is for imagen.jobs row {job_id} but {imagen_db.url_env} is not set")
    with imagen_db.connect() as conn:
        ownership = take_ownership(
            conn,
            job_id,
            plan.spec.job_attempt,
            context.run_id,
            context.run.parent_run_id,
            finished_work=finished_work,
        )
    if not ownership.owned or ownership.row is None:
        raise _failure(ownership.refusal(job_id, context.run_id))
    if context.run.tags.get(TAG_JOB_ID) != str(job_id):
        context.instance.add_run_tags(
            context.run_id,
            {TAG_JOB_ID: str(job_id), TAG_JOB_ATTEMPT: str(ownership.row.attempts)},
        )


POOLS = {"gpu": "imagen_gpu", "cloud": "imagen_cloud"}


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
    imagen_db: ImagenDatabaseResource,
) -> Iterator[dg.Output[GenerationPlan]]:
    """Validate the request, apply the style preset and bind it to a backend instance.

    The plan leaves on the output of the backend's pool (``gpu`` or ``cloud``), so exactly
    one of the two generate steps runs and the other is skipped.
    """
    try:
        plan = plan_generation(config.to_spec(), imagen.load())
    except ImagenError as error:
        raise _failure(error) from None
    _own_job(context, plan, imagen_db)
    tags = {TAG_BACKEND: plan.backend, TAG_STYLE: plan.request.style, TAG_POOL: POOLS[plan.pool]}
    if plan.spec.job_id is not None:
        tags[TAG_JOB_ID] = str(plan.spec.job_id)
    new_tags = {key: value for key, value in tags.items() if context.run.tags.get(key) != value}
    if new_tags:
        context.instance.add_run_tags(context.run_id, new_tags)
    context.log.info(
        f"backend {plan.backend} ({plan.backend_type}, {plan.model}), style {plan.request.style}, "
        f"{plan.request.width}x{plan.request.height}; prompt: {plan.request.prompt}"
    )
    yield dg.Output(plan, output_name=plan.pool)


def generate_image_for(
    context: dg.OpExecutionContext, plan: GenerationPlan, imagen_db: ImagenDatabaseResource
) -> GeneratedImage:
    """Call the backend and stage the image; transient errors are retried, others are not."""
    _own_job(context, plan, imagen_db)
    try:
        instance = plan.backend_instance()
    except ImagenError as error:
        raise _failure(error) from None
    previous = find_job_generation(plan, plan.output.path, plan.output.naming)
    if previous is not None:
        context.log.info(
            f"re-using the image run {previous.run_id} generated for imagen.jobs row "
            f"{plan.spec.job_id} ({previous.staged_path}); the backend is not called again"
        )
        return previous
    try:
        budget_note = check_budget(
            plan.budget,
            plan.backend,
            instance.backend.estimate_cost_usd(plan.request),
            imagen_db.connect if imagen_db.configured() else None,
        )
    except ImagenError as error:
        if error.transient:
            _retry_or_fail(context, error)
        raise _failure(error) from None
    if budget_note:
        context.log.info(budget_note)
    generation_context = GenerationContext(
        run_id=context.run_id,
        attempt=context.retry_number,
        instance_name=plan.backend,
        log=context.log,
    )
    label = f"backend {plan.backend!r} ({plan.backend_type}): "
    try:
        generated = run_generation(plan, instance, generation_context, plan.output.path)
    except TransientBackendError as error:
        _record_failed_call(context, plan, error, imagen_db)
        context.log.warning(
            f"{label}transient failure on attempt {context.retry_number + 1}: {error}"
        )
        _retry_or_fail(context, error, label)
        raise
    except ImagenError as error:
        if isinstance(error, BackendError):
            _record_failed_call(context, plan, error, imagen_db)
        raise _failure(error, label) from None
    except Exception as error:
        raise _failure(f"unexpected {type(error).__name__}: {error}", label) from error
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        # Dagster retries an interrupted step that has a retry policy, so a terminated run
        # would start the generation again; an interrupt is a request to stop.
        raise _failure("interrupted (the run was terminated); not retried", label) from None
    meta = generated.metadata
    context.log.info(
        f"{label}{meta.model}, seed {meta.seed}, {generated.width}x{generated.height}, "
        f"{meta.latency_s:.2f}s, ${meta.cost_usd:.4f}"
    )
    return generated


def _record_failed_call(
    context: dg.OpExecutionContext,
    plan: GenerationPlan,
    error: BackendError,
    imagen_db: ImagenDatabaseResource,
) -> None:
    """A ``failed`` usage row for a backend call that failed, when a database is configured."""
    if imagen_db.configured():
        context.log.info(
            record_failed_generation(
                imagen_db.connect, plan, context.run_id, context.retry_number, error
            )
        )


def _generate_op(kind: str, pool: str) -> dg.OpDefinition:
    @dg.op(
        name=f"generate_{kind}",
        pool=pool,
        tags={"kind": "generate"},
        description=f"Generate with a backend of the {kind!r} pool (Dagster pool {pool}).",
    )
    def generate(
        context: dg.OpExecutionContext, plan: GenerationPlan, imagen_db: ImagenDatabaseResource
    ) -> GeneratedImage:
        return generate_image_for(context, plan, imagen_db)

    return generate


generate_gpu = _generate_op("gpu", POOLS["gpu"])
generate_cloud = _generate_op("cloud", POOLS["cloud"])


@dg.op(tags={"kind": "files"}, ins={"generated": dg.In(list[GeneratedImage])})
def write_files(context: dg.OpExecutionContext, generated: list[GeneratedImage]) -> StoredImage:
    """Move the staged image to its final name, write the sidecar, record the materialization.

    ``generated`` is the fan-in of both generate steps; exactly one of them ran.
    """
    (image,) = generated
    output = image.plan.output
    try:
        stored = store_image(
            image, output.path, output.naming, output.write_metadata_json, context.run_id
        )
    except ImagenError as error:
        raise _failure(error) from None
    context.log_event(image_materialization(stored))
    context.log.info(f"wrote {stored.image_path}")
    return stored


@dg.op(tags={"kind": "cloud"})
def cloud_sync(
    context: dg.OpExecutionContext,
    stored: StoredImage,
    imagen_db: ImagenDatabaseResource,
) -> SyncOutcome:
    """Upload the image and its sidecar to Supabase Storage, when ``cloud:`` is configured.

    Unreachable Storage is retried by the retry policy; a missing bucket, a rejected key or
    a path held by another image fails at once with the reason.
    """
    _own_job(context, stored.generated.plan, imagen_db, finished_work=True)
    try:
        outcome = sync_image(stored, stored.generated.plan.cloud)
    except ImagenError as error:
        if error.transient:
            _retry_or_fail(context, error)
        raise _failure(error) from None
    if outcome.location is not None:
        base = image_materialization(stored)
        context.log_event(
            dg.AssetMaterialization(
                asset_key=IMAGE_ASSET_KEY,
                description=base.description,
                metadata={
                    **base.metadata,
                    "url": dg.MetadataValue.url(outcome.location.url),
                    "storage_object": dg.MetadataValue.text(
                        f"{outcome.location.bucket}/{outcome.location.path}"
                    ),
                },
            )
        )
    context.log.info(outcome.detail)
    return outcome


@dg.op(tags={"kind": "usage"})
def record_usage(
    context: dg.OpExecutionContext,
    stored: StoredImage,
    synced: SyncOutcome,
    imagen_db: ImagenDatabaseResource,
) -> UsageOutcome:
    """In one transaction: the ``imagen.images`` row, the ``mai.imagen_usage`` row and, for
    a queued job, its ``done`` (when a database is configured)."""
    plan = stored.generated.plan
    _own_job(context, plan, imagen_db, finished_work=True)
    try:
        with database_errors("recording the image and usage rows", imagen_db.url_env):
            if imagen_db.configured():
                with imagen_db.connect() as conn:
                    outcome = record_generation(conn, stored, synced, context.run_id)
            else:
                outcome = record_generation(None, stored, synced, context.run_id)
    except ImagenError as error:
        if error.transient:
            _retry_or_fail(context, error)
        raise _failure(error) from None
    if outcome.job_done:
        discard_job_record(stored.generated)
    context.log.info(outcome.detail)
    return outcome


def image_materialization(stored: StoredImage) -> dg.AssetMaterialization:
    """Lineage for one image: where it is, what made it, and a small preview."""
    generated = stored.generated
    plan = generated.plan
    meta = generated.metadata
    metadata: dict[str, Any] = {
        "path": dg.MetadataValue.path(stored.image_path),
        "prompt": dg.MetadataValue.text(plan.spec.prompt),
        "enriched_prompt": dg.MetadataValue.text(plan.request.prompt),
        "style": dg.MetadataValue.text(plan.request.style),
        "backend": dg.MetadataValue.text(plan.backend),
        "backend_type": dg.MetadataValue.text(plan.backend_type),
        "model": dg.MetadataValue.text(meta.model),
        "seed": dg.MetadataValue.int(meta.seed) if meta.seed is not None else None,
        "size": dg.MetadataValue.text(f"{generated.width}x{generated.height}"),
        "steps": dg.MetadataValue.int(meta.steps) if meta.steps is not None else None,
        "latency_s": dg.MetadataValue.float(meta.latency_s),
        "cost_usd": dg.MetadataValue.float(meta.cost_usd),
        "sha256": dg.MetadataValue.text(stored.sha256),
        "preview": dg.MetadataValue.md(preview_markdown_safe(stored.image_path)),
    }
    if stored.sidecar_path:
        metadata["sidecar_path"] = dg.MetadataValue.path(stored.sidecar_path)
    if plan.spec.job_id is not None:
        metadata["job_id"] = dg.MetadataValue.int(plan.spec.job_id)
    return dg.AssetMaterialization(
        asset_key=IMAGE_ASSET_KEY,
        description=plan.spec.prompt[:200],
        metadata={key: value for key, value in metadata.items() if value is not None},
    )


def preview_markdown_safe(path: str) -> str:
    """The preview markdown, or a note if the image cannot be thumbnailed."""
    try:
        return preview_markdown(Path(path))
    except OSError as error:
        return f"(no preview: {error})"

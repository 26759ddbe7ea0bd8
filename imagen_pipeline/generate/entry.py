"""The generate path's two entry points, one per op that runs it (see the package's
docstring): :func:`plan` and :func:`make`, with :class:`Step`, what the generate op hands
:func:`make`. Dagster stays on the op's side: the path reaches the run's log, the op's rule
for errors and the run's tags only through the step."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from imagen_pipeline.alerts.notify import open_alerts
from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.backends.progress import Progress, ProgressThrottle
from imagen_pipeline.errors import BackendError
from imagen_pipeline.generate.making import FailedCall, make_images
from imagen_pipeline.generate.planning import GenerationPlan, ImageSpec, plan_generation
from imagen_pipeline.generate.setup import Setup
from imagen_pipeline.generate.source_fetch import (
    Connect,
    attach_sources,
    check_client_owns_sources,
)
from imagen_pipeline.generate.sources import discard_sources
from imagen_pipeline.generate.staging import GeneratedImage


class RowProgress(Protocol):
    """A queued job's progress in its row (:class:`~imagen_pipeline.queue.progress.JobProgress`)."""

    def image(self, variation: int) -> None:
        """The images before ``variation`` are made."""

    def __call__(self, progress: Progress) -> None:
        """The backend's (throttled) progress on the current image."""


@dataclass(frozen=True)
class Step:
    """The generate op as the path sees it."""

    run_id: str
    attempt: int
    """0 for the step's first try, one more per retry."""
    log: Any
    """The run's log."""
    connect: Connect | None
    """The imagen database (source rows, the budget); None when none is configured."""
    alerts_database_url: str | None
    """Where the operator's alerts keep what they sent (:func:`open_alerts`)."""
    progress: RowProgress | None
    """A queued job's row, else None."""
    errors: Callable[[str], AbstractContextManager[object]]
    """The op's rule for the errors raised in a block (a retry or a final failure), given the
    label of the backend the block calls (``""`` for none)."""
    on_image: Callable[[GeneratedImage], None]
    """Told of each image made or re-used."""
    on_failed_call: FailedCall
    """Told of each backend call that failed, with the plan of the instance that failed it."""


def plan(spec: ImageSpec, setup: Setup, conn: psycopg.Connection | None = None) -> GenerationPlan:
    """The run's one plan of ``spec``, or an error naming the field at fault. With ``conn``
    (the queue's intake), a web client's row naming another owner's image is refused here,
    before any run; the generate step checks again when it fetches the sources."""
    planned = plan_generation(spec, setup)
    if conn is not None and planned.spec.source_images:
        check_client_owns_sources(conn, planned)
    return planned


def make(plan: GenerationPlan, step: Step) -> list[GeneratedImage]:
    """The images of ``plan``, one per variation (``count``), staged: the request's source
    images fetched, checked and staged (removed again however this ends), then each image
    re-used from an earlier run of the same job, else made (options and budget for this
    requester, the backend's call, its fallbacks); an image is never made twice."""
    with step.errors(""):
        plan = attach_sources(plan, step.run_id, step.connect)
    try:
        for source in plan.request.sources:
            step.log.info(
                f"source image {source.position + 1}: {source.origin}, "
                f"{source.width}x{source.height}, sha256 {source.sha256[:12]}"
            )
        return _variations(plan, step)
    finally:
        discard_sources(plan.request)


def _variations(plan: GenerationPlan, step: Step) -> list[GeneratedImage]:
    """The request's images, re-used or made, with their lines in the run's log."""
    alerts = open_alerts(plan.alerts, step.alerts_database_url)
    if plan.alerts is not None and not alerts.enabled:
        step.log.warning(alerts.describe())

    def label(variant: GenerationPlan) -> str:
        text = f"backend {variant.backend!r} ({variant.backend_type}): "
        if plan.spec.count > 1:
            text = f"image {variant.variation + 1}/{plan.spec.count}, {text}"
        return text

    def context_for(variant: GenerationPlan) -> GenerationContext:
        progress = step.progress
        if progress is not None:
            progress.image(variant.variation)
        return GenerationContext(
            run_id=step.run_id,
            attempt=step.attempt,
            instance_name=variant.backend,
            variation=variant.variation,
            log=step.log,
            progress=ProgressThrottle(
                step.log, label(variant).removesuffix(": "), (progress,) if progress else ()
            ),
        )

    images = []
    made_images = make_images(plan, context_for, step.connect, step.on_failed_call, alerts)
    for variant in plan.variations:
        with step.errors(label(variant)):
            try:
                made = next(made_images)
            except BackendError as error:
                if error.transient:
                    step.log.warning(
                        f"{label(variant)}transient failure on attempt {step.attempt + 1}: {error}"
                    )
                raise
        if made.budget_note:
            step.log.info(made.budget_note)
        step.log.info(("" if made.reused else label(variant)) + made.describe(variant))
        step.on_image(made.image)
        images.append(made.image)
    return images

"""Making the image of a plan, once: re-use the image an earlier run of the same job made,
else check today's budget, call the backend and stage the bytes.

Plain Python (the generate op is a thin layer over :func:`make_image`): errors are the
pipeline's own, each saying whether a retry can help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import psycopg

from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.backends.pricing import describe_cost
from imagen_pipeline.errors import BackendError, BackendUnavailableError
from imagen_pipeline.generation import GeneratedImage, run_generation
from imagen_pipeline.output.store import find_job_generation
from imagen_pipeline.planning import GenerationPlan
from imagen_pipeline.usage.budget import (
    BudgetExceededError,
    BudgetUncheckableError,
    check_budget,
)


@dataclass(frozen=True)
class MadeImage:
    """The staged image, and how it came to be (for the run's log)."""

    image: GeneratedImage
    reused: bool
    budget_note: str | None = None

    def describe(self, plan: GenerationPlan) -> str:
        """One line for the run's log."""
        if self.reused:
            return (
                f"re-using the image run {self.image.run_id} generated for imagen.jobs row "
                f"{plan.spec.job_id} ({self.image.staged_path}); the backend is not called again"
            )
        meta = self.image.metadata
        used = self.image.plan
        fell_back = (
            f"{used.fallback_reason}; made by {used.backend!r}: " if used.fell_back_from else ""
        )
        return fell_back + (
            f"{meta.model}, seed {meta.seed}, {self.image.width}x{self.image.height}, "
            f"{meta.latency_s:.2f}s, {describe_cost(meta.cost_usd)}"
            + (f" ({meta.price_note})" if meta.price_source != "free" else "")
        )


FailedCall = Callable[[GenerationPlan, BackendError], None]
"""Told of each backend call that failed, with the plan of the instance that failed it (the
backend's, or a fallback's), before the error goes on."""


def make_image(
    plan: GenerationPlan,
    context: GenerationContext,
    connect: Callable[[], psycopg.Connection] | None,
    on_failed_call: FailedCall | None = None,
) -> MadeImage:
    """The image of ``plan``, generated at most once per job (``connect``: the imagen
    database, for the budget check; None when none is configured)."""
    previous = find_job_generation(plan, plan.output.path, plan.output.naming)
    if previous is not None:
        return MadeImage(previous, reused=True)
    try:
        return _generate(plan, context, connect)
    except BackendUnavailableError as error:
        if plan.fallbacks:
            return _fall_back(plan, context, connect, error, on_failed_call)
        _tell(on_failed_call, plan, error)
        raise
    except BackendError as error:
        _tell(on_failed_call, plan, error)
        raise


def _tell(on_failed_call: FailedCall | None, plan: GenerationPlan, error: BackendError) -> None:
    if on_failed_call is not None:
        on_failed_call(plan, error)


def _generate(
    plan: GenerationPlan,
    context: GenerationContext,
    connect: Callable[[], psycopg.Connection] | None,
) -> MadeImage:
    instance = plan.backend_instance()
    note = check_budget(
        plan.budget, plan.backend, instance.backend.estimate_price(plan.request), connect
    )
    image = run_generation(plan, instance, context, plan.output.path)
    return MadeImage(image, reused=False, budget_note=note)


def _fall_back(
    plan: GenerationPlan,
    context: GenerationContext,
    connect: Callable[[], psycopg.Connection] | None,
    unavailable: BackendUnavailableError,
    on_failed_call: FailedCall | None,
) -> MadeImage:
    """The image from the first ``fallback`` instance the budget allows; a fallback whose
    call the budget refuses (or cannot price) is not taken, and the error says so. A
    fallback's failed call is reported under the fallback."""
    refused = []
    for fallback in plan.fallbacks:
        planned = plan.falling_back(fallback, unavailable.summary)
        context.log.warning(f"{planned.fallback_reason}; trying {fallback.backend!r}")
        gen_context = replace(context, instance_name=fallback.backend)
        try:
            return _generate(planned, gen_context, connect)
        except (BudgetExceededError, BudgetUncheckableError) as error:
            refused.append(f"fallback {fallback.backend!r} not taken: {error}")
        except BackendError as error:
            _tell(on_failed_call, planned, error)
            raise
    error = BackendUnavailableError(
        f"{unavailable}; " + "; ".join(refused),
        unavailable.retry_after_s,
        summary=unavailable.summary,
    )
    _tell(on_failed_call, plan, error)
    raise error

"""Making the images of a plan, once each: re-use the images an earlier run of the same job
made, else check today's budget for the images still to make, call the backend and stage
the bytes.

Plain Python, run by :func:`imagen_pipeline.generate.make` in the generate step: errors are
the pipeline's own, each saying whether a retry can help. A fallback taken and the operator's
budget used up alert the operator (``alerts``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import psycopg

from imagen_pipeline.alerts.notify import Alerts
from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.backends.pricing import describe_cost
from imagen_pipeline.errors import BackendError, BackendUnavailableError, InvalidRequestError
from imagen_pipeline.generate.budget import (
    BudgetAsk,
    BudgetExceededError,
    BudgetUncheckableError,
    check_budget,
    release_run_holds,
)
from imagen_pipeline.generate.job_records import find_job_generation, record_generation
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.staging import GeneratedImage, run_generation


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


ContextFor = Callable[[GenerationPlan], GenerationContext]
"""The generation context of one variation's call (its progress listener, its log label)."""


def make_images(
    plan: GenerationPlan,
    context_for: ContextFor,
    connect: Callable[[], psycopg.Connection] | None,
    on_failed_call: FailedCall | None = None,
    alerts: Alerts | None = None,
) -> Iterator[MadeImage]:
    """The images of ``plan``, one per variation in order, each generated at most once per
    job (``connect``: the imagen database, for the budget; None when none is configured;
    ``alerts``: the operator's, told of a fallback taken and of their budget used up).

    The budget check before the first call holds every image still to make, so a request
    for several images is priced whole; when a call fails, the run's holds are dropped (a
    retry checks again).
    """
    variations = plan.variations
    earlier = {variant.variation: find_job_generation(variant) for variant in variations}
    to_make = [number for number, image in earlier.items() if image is None]
    context: GenerationContext | None = None
    try:
        for variant in variations:
            previous = earlier[variant.variation]
            if previous is not None:
                yield MadeImage(previous, reused=True)
                continue
            context = context_for(variant)
            holding = tuple(number for number in to_make if number >= variant.variation)
            yield make_image(variant, context, connect, on_failed_call, holding, alerts)
    except BaseException:
        if connect is not None and context is not None:
            context.log.info(release_run_holds(connect, context.run_id))
        raise


def make_image(
    plan: GenerationPlan,
    context: GenerationContext,
    connect: Callable[[], psycopg.Connection] | None,
    on_failed_call: FailedCall | None = None,
    holding: tuple[int, ...] = (),
    alerts: Alerts | None = None,
) -> MadeImage:
    """Generate the image of ``plan`` (one variation), with its fallbacks; ``holding``: the
    variations the budget check holds (this one first; default: this one)."""
    holding = holding or (plan.variation,)
    try:
        return _generate(plan, context, connect, holding, alerts)
    except BackendUnavailableError as error:
        if plan.fallbacks:
            return _fall_back(plan, context, connect, error, on_failed_call, holding, alerts)
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
    holding: tuple[int, ...],
    alerts: Alerts | None,
) -> MadeImage:
    """Check the options, the source images and the budget for this requester, then call
    the backend."""
    instance = plan.backend_instance()
    request = plan.request
    instance.backend.check_options(request.backend_opts, from_client=plan.spec.from_client)
    instance.backend.check_source_fields(
        request.mode, request.strength, request.has_mask, from_client=plan.spec.from_client
    )
    instance.backend.check_sources(plan.backend, request)
    ask = BudgetAsk(
        instance=plan.backend,
        price=instance.backend.estimate_price(plan.request),
        run_id=context.run_id,
        variations=holding,
        owner=plan.owner_user_id,
        from_client=plan.spec.from_client,
    )
    note = check_budget(plan.budget, ask, connect, alerts=alerts)
    image = run_generation(plan, instance, context, plan.output.path)
    record_generation(image)
    return MadeImage(image, reused=False, budget_note=note)


def _fall_back(
    plan: GenerationPlan,
    context: GenerationContext,
    connect: Callable[[], psycopg.Connection] | None,
    unavailable: BackendUnavailableError,
    on_failed_call: FailedCall | None,
    holding: tuple[int, ...],
    alerts: Alerts | None,
) -> MadeImage:
    """The image from the first ``fallback`` instance the budget allows; a fallback whose
    call the budget refuses (or cannot price), or that cannot take the request's source
    images, is not taken, and the error says so. A
    fallback's failed call is reported under the fallback; a fallback that made the image
    alerts the operator (one event per backend and repeat window)."""
    refused = []
    for fallback in plan.fallbacks:
        planned = plan.falling_back(fallback, unavailable.summary)
        context.log.warning(f"{planned.fallback_reason}; trying {fallback.backend!r}")
        gen_context = replace(context, instance_name=fallback.backend)
        try:
            made = _generate(planned, gen_context, connect, holding, alerts)
        except (BudgetExceededError, BudgetUncheckableError, InvalidRequestError) as error:
            refused.append(f"fallback {fallback.backend!r} not taken: {error}")
        except BackendError as error:
            _tell(on_failed_call, planned, error)
            raise
        else:
            if alerts is not None:
                alerts.event(
                    f"fallback:{plan.backend}",
                    f"Fallback taken: {plan.backend} -> {fallback.backend}",
                    f"{planned.fallback_reason}; run {context.run_id} had its image made by "
                    f"{fallback.backend!r} instead.",
                )
            return made
    error = BackendUnavailableError(
        f"{unavailable}; " + "; ".join(refused),
        unavailable.retry_after_s,
        summary=unavailable.summary,
    )
    _tell(on_failed_call, plan, error)
    raise error

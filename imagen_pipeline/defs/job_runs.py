"""How a row of ``imagen.jobs`` becomes a ``generate_image`` run (shared by the sensor and the
NOTIFY fast path, so a run looks the same in the UI whichever launched it)."""

from __future__ import annotations

import dagster as dg

from imagen_pipeline.defs.ops import (
    POOLS,
    TAG_BACKEND,
    TAG_JOB_ATTEMPT,
    TAG_JOB_ID,
    TAG_OWNER,
    TAG_POOL,
    TAG_STYLE,
    GenerateImageConfig,
)
from imagen_pipeline.planning import GenerationPlan
from imagen_pipeline.queue.rows import JobRow

TAG_SOURCE = "imagen/source"


def run_key_for(row: JobRow) -> str:
    """One run key per job attempt: ``imagen-job-<id>-<attempt>``."""
    return f"imagen-job-{row.id}-{row.attempts}"


def run_tags_for(row: JobRow, plan: GenerationPlan) -> dict[str, str]:
    """Tags that link the run to its row (used to find runs of a row)."""
    tags = {
        TAG_JOB_ID: str(row.id),
        TAG_JOB_ATTEMPT: str(row.attempts),
        TAG_BACKEND: plan.backend,
        TAG_STYLE: plan.request.style,
        TAG_POOL: POOLS[plan.pool],
        TAG_SOURCE: "imagen.jobs",
    }
    if row.owner_user_id:
        tags[TAG_OWNER] = row.owner_user_id
    return tags


def run_config_for(plan: GenerationPlan) -> dg.RunConfig:
    """Run config of the row's validated request (the launchpad shows the same fields).

    Built from the plan, never from the raw row: only checked, typed values reach Dagster.
    """
    return dg.RunConfig(ops={"enrich_prompt": GenerateImageConfig.from_spec(plan.spec)})


def run_request_for(row: JobRow, plan: GenerationPlan) -> dg.RunRequest:
    """The sensor's request for one claimed row."""
    return dg.RunRequest(
        run_key=run_key_for(row), run_config=run_config_for(plan), tags=run_tags_for(row, plan)
    )

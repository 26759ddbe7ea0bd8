"""How a row of ``imagen.jobs`` becomes a ``generate_image`` run (shared by the sensor and the
NOTIFY fast path, so a run looks the same in the UI whichever launched it)."""

from __future__ import annotations

import dagster as dg

from imagen_pipeline.defs.run_config import GenerateImageConfig
from imagen_pipeline.defs.run_identity import run_tags
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.queue.rows import JobRow
from imagen_pipeline.run_tags import TAG_SOURCE


def run_key_for(row: JobRow) -> str:
    """One run key per claim of the job: ``imagen-job-<id>-<claim>``."""
    return f"imagen-job-{row.id}-{row.claims}"


def run_tags_for(plan: GenerationPlan, source: str = "imagen.jobs") -> dict[str, str]:
    """Tags of a queued job's run: the plan's (which link it to its row) and its source."""
    return {**run_tags(plan), TAG_SOURCE: source}


def run_config_for(plan: GenerationPlan) -> dg.RunConfig:
    """Run config of the row's validated request (the launchpad shows the same fields).

    Built from the plan, never from the raw row: only checked, typed values reach Dagster.
    """
    return dg.RunConfig(ops={"enrich_prompt": GenerateImageConfig.from_spec(plan.spec)})


def run_request_for(row: JobRow, plan: GenerationPlan) -> dg.RunRequest:
    """The sensor's request for one claimed row."""
    return dg.RunRequest(
        run_key=run_key_for(row), run_config=run_config_for(plan), tags=run_tags_for(plan)
    )

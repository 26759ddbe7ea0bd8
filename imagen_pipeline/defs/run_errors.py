"""The error text of a failed run, as a person should read it (job rows, CLI stderr)."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg


def step_failure_text(events: Iterable[dg.DagsterEvent]) -> str | None:
    """The first step failure's description (``Failure``) or the user error's message."""
    for event in events:
        if not (event.is_step_failure and event.step_failure_data):
            continue
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description
        if data.error:
            error = data.error
            while error.cause is not None:
                error = error.cause
            return f"{error.cls_name}: {error.message.strip()}" if error.cls_name else error.message
    return None


def run_step_failure(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """:func:`step_failure_text` of a stored run."""
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return step_failure_text(entry.dagster_event for entry in entries if entry.dagster_event)

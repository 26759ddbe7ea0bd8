"""The error text of a failed run, as a person should read it.

Two readers: the operator (CLI stderr, the Dagster UI), who gets the full message, and the
web user who queued the job (``imagen.jobs.error``), who gets the failure's public sentence
(:attr:`imagen_pipeline.errors.ImagenError.public`, carried in the ``Failure``'s metadata
under :data:`PUBLIC_ERROR_KEY`) and never a class name, a server path or configuration.
Whose fault a failure is (:data:`imagen_pipeline.errors.Fault`) travels beside it under
:data:`FAULT_KEY`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from imagen_pipeline.errors import SEE_THE_RUN, Fault

PUBLIC_ERROR_KEY = "imagen/public_error"
FAULT_KEY = "imagen/fault"
FAULTS: tuple[Fault, ...] = ("request", "outage", "server")
OWN_MODULES = "imagen_pipeline."


def _step_failures(events: Iterable[dg.DagsterEvent]) -> Iterable[dg.DagsterEvent]:
    return (event for event in events if event.is_step_failure and event.step_failure_data)


def _error_message(error: dg.SerializableErrorInfo) -> str:
    """The root cause's message: ``Class: text``, or just the text for an own error (its
    message is written to be read on its own; the module path is never shown)."""
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    head, separator, text = message.partition(": ")
    if separator and head.rsplit(".", 1)[-1] == error.cls_name:
        return text if head.startswith(OWN_MODULES) else f"{error.cls_name}: {text}"
    return message


def step_failure_text(events: Iterable[dg.DagsterEvent]) -> str | None:
    """The first step failure's description (``Failure``) or its error's message."""
    for event in _step_failures(events):
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description
        if data.error:
            return _error_message(data.error)
    return None


def public_failure_text(events: Iterable[dg.DagsterEvent]) -> str | None:
    """The first step failure as a web user may read it."""
    for event in _step_failures(events):
        data = event.step_failure_data
        if data.user_failure_data:
            public = data.user_failure_data.metadata.get(PUBLIC_ERROR_KEY)
            if public is not None and isinstance(public.value, str):
                return public.value
        return f"step {event.step_key} failed unexpectedly; {SEE_THE_RUN}"
    return None


def failure_fault(events: Iterable[dg.DagsterEvent]) -> Fault:
    """Whose fault a failed run is: its first step failure's (``server`` when the step did
    not say: an unexpected exception), ``outage`` when no step failed (the run could not be
    launched, no worker took it, its worker died)."""
    for event in _step_failures(events):
        data = event.step_failure_data
        if data.user_failure_data:
            fault = data.user_failure_data.metadata.get(FAULT_KEY)
            if fault is not None and fault.value in FAULTS:
                return fault.value
        return "server"
    return "outage"


def _stored_failures(instance: dg.DagsterInstance, run_id: str) -> list[dg.DagsterEvent]:
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return [entry.dagster_event for entry in entries if entry.dagster_event]


def run_step_failure(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """:func:`step_failure_text` of a stored run."""
    return step_failure_text(_stored_failures(instance, run_id))


def run_public_failure(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """:func:`public_failure_text` of a stored run."""
    return public_failure_text(_stored_failures(instance, run_id))


def run_fault(instance: dg.DagsterInstance, run_id: str) -> Fault:
    """:func:`failure_fault` of a stored run."""
    return failure_fault(_stored_failures(instance, run_id))


@dataclass(frozen=True)
class RunFailure:
    """What the jobs queue needs to know of a failed run: the public sentence (None when no
    step failed), whose fault it was and the step that failed first."""

    public: str | None
    fault: Fault
    step_key: str | None


def run_failure(instance: dg.DagsterInstance, run_id: str) -> RunFailure:
    """:class:`RunFailure` of a stored run (one read of its step failures)."""
    events = _stored_failures(instance, run_id)
    first = next(iter(_step_failures(events)), None)
    return RunFailure(
        public=public_failure_text(events),
        fault=failure_fault(events),
        step_key=first.step_key if first is not None else None,
    )

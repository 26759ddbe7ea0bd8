"""What a failed run alerts the operator about.

A run that failed for its own request (a field out of range, a prompt a backend refuses, a
user's own daily limit) is the user's to fix and alerts nobody. Any other failure, the
server's set-up or code or an outage, is an event keyed by whose fault it is and by the
failure's text with what differs from run to run taken out (ids, numbers), so an outage
that fails twenty runs is one alert, with the repeats counted in the next one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from imagen_pipeline.alerts.payload import clip
from imagen_pipeline.errors import Fault

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_ID = re.compile(r"\b(?=[A-Za-z_]*\d)\w{6,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_WHOSE = {
    "server": (
        "server set-up or code",
        "The server's set-up or code failed it (imagen.yaml, a missing credential, a bug): it "
        "needs the operator, and runs failing the same way do until it is fixed.",
    ),
    "outage": (
        "outage",
        "A part the pipeline depends on was away (a backend, the database, Storage, the broker "
        "or a worker).",
    ),
}


@dataclass(frozen=True)
class RunFailureAlert:
    """The event to send for a failed run."""

    key: str
    title: str
    text: str


def failure_kind(summary: str) -> str:
    """``summary`` with ids (uuids, words of six or more characters with a digit) and numbers
    replaced by ``#`` and spaces collapsed: the same for every run that failed for the same
    reason."""
    kind = _NUMBER.sub("#", _ID.sub("#", _UUID.sub("#", summary)))
    return " ".join(kind.split())


def run_failure_alert(
    fault: Fault, summary: str, run_id: str, job_name: str
) -> RunFailureAlert | None:
    """The alert of a run of ``job_name`` that failed with ``summary``, or None when the
    failure was its request's (``fault``, :data:`imagen_pipeline.errors.Fault`)."""
    if fault == "request":
        return None
    label, whose = _WHOSE[fault]
    digest = hashlib.sha256(failure_kind(summary).encode()).hexdigest()[:16]
    first_line = (summary.strip().splitlines() or ["(no message)"])[0]
    return RunFailureAlert(
        key=f"run-failed:{fault}:{digest}",
        title=f"Runs failing ({label}): {clip(first_line, 90)}",
        text=f"Run {run_id} of {job_name} failed: {summary.strip()}\n{whose}",
    )

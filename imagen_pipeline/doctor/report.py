"""Checks and their lines: run every probe at once under one deadline, so a healthy stack
answers in a few seconds and a part that hangs costs the deadline, not the whole run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Check:
    """One line of the report: which part, how it is, what was seen and what to do."""

    check: str
    status: Status
    detail: str
    hint: str = ""


@dataclass(frozen=True)
class Probe:
    """Something that checks one part (``name``, its line when it does not answer) and
    returns one or more checks."""

    name: str
    run: Callable[[], list[Check]]


def run_probes(probes: Sequence[Probe], timeout_s: float) -> list[Check]:
    """Every probe's checks, in the probes' order. Each probe runs in a daemon thread; one
    that has not returned by the deadline is a failure of its part, and one that raised is
    a failure naming the error (its thread is left behind: the process is about to exit)."""
    results: list[list[Check] | None] = [None] * len(probes)

    def work(index: int, probe: Probe) -> None:
        try:
            results[index] = probe.run()
        except Exception as error:
            results[index] = [
                Check(probe.name, "fail", f"the check failed: {type(error).__name__}: {error}")
            ]

    threads = [
        threading.Thread(target=work, args=(i, p), name=f"doctor-{p.name}", daemon=True)
        for i, p in enumerate(probes)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    checks: list[Check] = []
    for probe, result in zip(probes, results, strict=True):
        checks.extend(
            result
            if result is not None
            else [
                Check(
                    probe.name,
                    "fail",
                    f"no answer within {timeout_s:g} s",
                    "the part hangs (a host that drops packets, a locked table): see its own logs",
                )
            ]
        )
    return checks


def render_lines(checks: Sequence[Check]) -> list[str]:
    """One line per check: status, the part, the detail and, after ``->``, the hint."""
    width = max((len(check.check) for check in checks), default=0)
    return [
        f"{check.status.upper() if check.status == 'fail' else check.status:<5} "
        f"{check.check:<{width}}  {check.detail}" + (f" -> {check.hint}" if check.hint else "")
        for check in checks
    ]


def render_json(checks: Sequence[Check]) -> str:
    """The checks as a JSON list of ``{check, status, detail, hint}``."""
    return json.dumps([asdict(check) for check in checks], indent=2)


def exit_status(checks: Sequence[Check]) -> int:
    """1 when a check failed, else 0 (warnings allowed)."""
    return int(any(check.status == "fail" for check in checks))


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://:secret@host`` -> ``redis://:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def elapsed_ms(since: float) -> str:
    """Milliseconds since ``since`` (``time.monotonic()``), for a detail."""
    return f"{(time.monotonic() - since) * 1000:.0f} ms"

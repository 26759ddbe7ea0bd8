"""A one-op job for the compute log tests. Its op writes to stdout and stderr, then lists the
processes its own process has started: a compute log manager that mirrors the output starts a
``tail`` and a watcher per stream. It executes in process, as ``generate_image`` does, and is
run with ``dagster job execute -f``, so it imports nothing from the test package."""

import json
import os
import sys
from pathlib import Path

import dagster as dg

STDOUT_TEXT = "printed by the probe op"
STDERR_TEXT = "warned by the probe op"


def child_commands() -> list[str]:
    """The command lines of this process's child processes (Linux /proc)."""
    pids: list[str] = []
    for children in Path("/proc/self/task").glob("*/children"):
        pids.extend(children.read_text().split())
    commands = []
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        commands.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
    return commands


@dg.op
def probe() -> None:
    """Write to both streams, then record the children to ``$PROBE_RESULT``."""
    print(STDOUT_TEXT, flush=True)
    print(STDERR_TEXT, file=sys.stderr, flush=True)
    Path(os.environ["PROBE_RESULT"]).write_text(json.dumps(child_commands()))


@dg.job(executor_def=dg.in_process_executor)
def compute_logs_probe() -> None:
    probe()

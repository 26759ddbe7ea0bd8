"""A warm process that forks one run worker per run (started by :mod:`.forking_launcher`).

Dagster's default launcher has the code server spawn a fresh interpreter per run, which
imports Dagster, the instance's storage and the code location again before the first op
starts: on a two-core host that is most of a run's CPU (docs/benchmarks.md). This process
does those imports once, and each run worker is an ``os.fork()`` of it that runs exactly
what ``dagster api execute_run`` runs for a run id.

Protocol, one JSON object per line: the launcher writes ``{"instance_ref", "job_origin"}``
first and then ``{"run_id"}`` per run on stdin; this process answers on its original stdout
with ``ready`` (or ``failed`` and exits), ``started`` (run id, pid) per fork and ``exited``
(run id, pid, exit code) per reaped worker. Its own output and the workers' go to stderr.
When stdin closes (the launcher was disposed or its process died) it stops forking, waits
for its workers and exits; the workers never depend on it.

Run it only through :class:`~imagen_pipeline.instance.forking_launcher.ForkingRunLauncher`.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import random
import select
import signal
import sys
import threading
import traceback
from typing import IO, Any

import dagster as dg

# Dagster has no public API for executing an existing run in this process; these are the
# functions `dagster api execute_run` itself calls (dagster is pinned to one version).
from dagster._cli.api import _execute_run_command_body
from dagster._core.instance import InstanceRef
from dagster._core.origin import JobPythonOrigin
from dagster._serdes import deserialize_value
from dagster._utils.hosted_user_process import recon_job_from_origin
from dagster._utils.interrupts import capture_interrupts

POLL_INTERVAL_S = 0.2


class ProtocolWriter:
    """Writes one JSON message per line to the launcher; a vanished launcher is ignored."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def send(self, event: str, **fields: Any) -> None:
        """Send ``{"event": event, **fields}``."""
        try:
            self.stream.write(json.dumps({"event": event, **fields}) + "\n")
            self.stream.flush()
        except (BrokenPipeError, OSError):
            pass


class LineReader:
    """Non-blocking line reader over a file descriptor (for use with ``select``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.closed = False

    def read_lines(self) -> list[str]:
        """Read what is available and return every complete line; sets ``closed`` at EOF."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.closed = True
            return []
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines if line.strip()]


def preload(instance_ref: InstanceRef, job_origin: JobPythonOrigin) -> None:
    """Import the instance's storage classes and build the job definition once.

    Nothing here may open a connection or start a thread: both would be shared with every
    forked worker.
    """
    for name in instance_ref._fields:
        class_data = getattr(instance_ref, name)
        module_name = getattr(class_data, "module_name", None)
        if isinstance(module_name, str):
            importlib.import_module(module_name)
    recon_job_from_origin(job_origin).get_definition()


def run_worker(run_id: str, instance_ref: InstanceRef) -> int:
    """Execute ``run_id`` in this (forked) process as ``dagster api execute_run`` would."""
    with capture_interrupts(), dg.DagsterInstance.from_ref(instance_ref) as instance:
        return _execute_run_command_body(
            run_id, instance, lambda event: None, set_exit_code_on_failure=False
        )


def fork_worker(run_id: str, instance_ref: InstanceRef, protocol_fd: int) -> int:
    """Fork a worker for ``run_id``; returns its pid in the parent, never returns in the child."""
    pid = os.fork()
    if pid:
        return pid
    exit_code = 1
    try:
        os.close(protocol_fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        random.seed()
        exit_code = run_worker(run_id, instance_ref)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def reap(workers: dict[int, str], protocol: ProtocolWriter) -> None:
    """Report every worker that has exited."""
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        run_id = workers.pop(pid, None)
        if run_id is not None:
            protocol.send(
                "exited", run_id=run_id, pid=pid, exit_code=os.waitstatus_to_exitcode(status)
            )


def serve(protocol_fd: int) -> None:
    """Read the init message, preload, then fork a worker per requested run until stdin closes."""
    protocol = ProtocolWriter(os.fdopen(protocol_fd, "w", buffering=1, closefd=False))
    commands = LineReader(sys.stdin.fileno())
    lines: list[str] = []
    while not lines:
        select.select([commands.fd], [], [])
        lines = commands.read_lines()
        if commands.closed and not lines:
            return
    init, *requests = lines
    try:
        settings = json.loads(init)
        instance_ref = deserialize_value(settings["instance_ref"], InstanceRef)
        preload(instance_ref, deserialize_value(settings["job_origin"], JobPythonOrigin))
        if threading.active_count() != 1:
            raise RuntimeError(
                f"{threading.active_count()} threads after loading the code location; "
                "a process with threads cannot be forked safely"
            )
    except Exception:
        protocol.send("failed", message=traceback.format_exc(limit=20))
        return
    # Objects that exist now live as long as the process: keep the collector away from
    # them, so workers do not copy the pages they are on.
    gc.freeze()
    protocol.send("ready", pid=os.getpid())
    workers: dict[int, str] = {}
    while True:
        for line in requests:
            run_id = json.loads(line)["run_id"]
            pid = fork_worker(run_id, instance_ref, protocol_fd)
            workers[pid] = run_id
            protocol.send("started", run_id=run_id, pid=pid)
        reap(workers, protocol)
        if commands.closed and not workers:
            return
        watched = [] if commands.closed else [commands.fd]
        readable, _, _ = select.select(watched, [], [], POLL_INTERVAL_S)
        requests = commands.read_lines() if readable else []


def main() -> None:
    """Entry point: keep the original stdout for the protocol, send all output to stderr."""
    protocol_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Ctrl-C in a terminal reaches the whole process group; the workers handle it, and this
    # process goes on reaping them until the launcher closes stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(protocol_fd)


if __name__ == "__main__":
    main()

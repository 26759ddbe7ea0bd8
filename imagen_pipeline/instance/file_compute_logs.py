"""Dagster's local compute logs without the per-run ``tail`` processes.

Dagster's ``LocalComputeLogManager`` captures a run's stdout and stderr into files under
``$DAGSTER_HOME/storage`` (the run's "stdout" and "stderr" in the UI) and, so the output
still reaches the console, mirrors each file back to the process's own stream: a ``tail -F``
and a Python watcher process for stdout, two more for stderr, started and stopped for every
run. In an ``imagen worker`` pool process that is four processes, two of them interpreters,
per image, started while the run competes for the CPU with the runs beside it; the mirrored
output only lands in the worker's journal, which already has each run's Dagster log.

:class:`FileComputeLogManager` captures into the same files, read the same way by the UI,
and in an ``imagen worker`` (which sets ``IMAGEN_COMPUTE_LOG_ECHO=0`` for its runs) mirrors
nothing. Everywhere else it echoes as Dagster's does: ``dagster job execute`` from a shell
on the same instance still shows a step's output in the terminal.

It extends ``LocalComputeLogManager`` with Dagster-internal names, all listed in
:mod:`imagen_pipeline.instance.dagster_internals`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from imagen_pipeline.instance.dagster_internals import (
    IO_TYPE_EXTENSION,
    CapturedLogContext,
    ComputeIOType,
    ConfigurableClassData,
    LocalComputeLogManager,
    capture_folder_of,
    ensure_file,
    redirect_to_file,
    set_capture_folder,
    touch_file,
)

ECHO_ENV = "IMAGEN_COMPUTE_LOG_ECHO"
"""``0``: capture without echoing to the console (``imagen worker`` sets it for its runs)."""
DEFAULT_SUBDIRECTORY = "storage"
"""Where Dagster's own manager keeps compute logs, under the instance's root directory."""


class FileComputeLogManager(LocalComputeLogManager):
    """``LocalComputeLogManager`` that, where ``$IMAGEN_COMPUTE_LOG_ECHO`` is ``0`` (in an
    ``imagen worker``), captures stdout and stderr into its files without mirroring them to
    the console (no ``tail`` or watcher processes per run); elsewhere exactly Dagster's.

    Config: ``base_dir`` (default: the instance's ``storage`` folder, ``$DAGSTER_HOME/storage``,
    as for Dagster's default manager) and ``polling_timeout``, as for ``LocalComputeLogManager``.
    """

    def __init__(
        self,
        base_dir: str | None = None,
        polling_timeout: float | None = None,
        inst_data: ConfigurableClassData | None = None,
    ) -> None:
        super().__init__(base_dir or "", polling_timeout, inst_data)
        self._configured_base_dir = base_dir

    def register_instance(self, instance: dg.DagsterInstance) -> None:
        """Without ``base_dir``: the instance's ``storage`` folder, as Dagster's default
        manager (``$DAGSTER_HOME/storage``)."""
        super().register_instance(instance)
        if not self._configured_base_dir:
            set_capture_folder(self, str(Path(instance.root_directory) / DEFAULT_SUBDIRECTORY))

    def capture_folder(self) -> Path:
        """Where runs' compute logs are captured: one folder per run id."""
        return Path(capture_folder_of(self))

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """``LocalComputeLogManager``'s fields, with ``base_dir`` optional."""
        return {
            "base_dir": dg.Field(
                dg.StringSource,
                is_required=False,
                description="Folder of the captured files; default $DAGSTER_HOME/storage.",
            ),
            "polling_timeout": dg.Field(dg.Float, is_required=False),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> FileComputeLogManager:
        """Build the manager from its ``dagster.yaml`` block."""
        return cls(
            base_dir=config_value.get("base_dir"),
            polling_timeout=config_value.get("polling_timeout"),
            inst_data=inst_data,
        )

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        """Send this process's stdout and stderr to the log key's files while the block runs;
        echoed to the console as Dagster does unless ``$IMAGEN_COMPUTE_LOG_ECHO`` is ``0``."""
        if os.environ.get(ECHO_ENV, "1") != "0":
            with super().capture_logs(log_key) as context:
                yield context
            return
        paths = {
            io_type: self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[io_type])
            for io_type in (ComputeIOType.STDOUT, ComputeIOType.STDERR)
        }
        for path in paths.values():
            ensure_file(path)
        with (
            redirect_to_file(sys.stdout, paths[ComputeIOType.STDOUT]),
            redirect_to_file(sys.stderr, paths[ComputeIOType.STDERR]),
        ):
            yield CapturedLogContext(log_key)
        # The marker Dagster's manager leaves: the UI stops waiting for more output.
        touch_file(self.complete_artifact_path(log_key))

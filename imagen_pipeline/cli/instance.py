"""Which Dagster instance the CLI records runs in.

``$DAGSTER_HOME`` when set (the same instance ``dagster dev`` and the daemon use); otherwise
``$XDG_STATE_HOME/imagen/dagster`` (default ``~/.local/state/imagen/dagster``), created with a
SQLite instance config so ``imagen generate`` works on a machine without any Dagster setup.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

DEFAULT_INSTANCE_YAML = """\
# Created by `imagen` because DAGSTER_HOME was not set. Point DAGSTER_HOME here to see
# these runs in `dagster dev`. Runs are stored in SQLite files in this folder.
telemetry:
  enabled: false
# Log messages below INFO (Dagster's "Writing file at ..." lines) are not stored. This also
# keeps Dagster's DEBUG-level events (run and step starts and successes) off the console,
# which `imagen generate` does not show anyway; dagster.yaml keeps the default.
python_logs:
  python_log_level: INFO
"""


def default_dagster_home() -> Path:
    """Fallback instance folder when ``DAGSTER_HOME`` is not set."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(state) / "imagen" / "dagster"


def cli_instance() -> dg.DagsterInstance:
    """The instance under ``$DAGSTER_HOME``, or the fallback folder (created on first use)."""
    if not os.environ.get("DAGSTER_HOME"):
        home = default_dagster_home()
        home.mkdir(parents=True, exist_ok=True)
        instance_yaml = home / "dagster.yaml"
        if not instance_yaml.exists():
            instance_yaml.write_text(DEFAULT_INSTANCE_YAML, encoding="utf-8")
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()

"""Benchmark how fast the ``imagen`` command starts, against ``import dagster``.

Usage:
    .venv/bin/python scripts/bench_cli.py [--repeats 5]

Runs each command --repeats times, interleaved (one round runs every command once, so a
slow moment of the machine hits all of them alike), in a throwaway folder with its own
DAGSTER_HOME and the built-in default config (mock backend, no database), and prints the
median wall time of each, and each one's ratio to ``python -c "import dagster"`` measured
in the same rounds (import_dagster_s). Goals (issue 16): commands that run no job <= 0.5 s;
``imagen generate`` on the mock <= 1.5 x import_dagster_s. For scale, it also times the
cheapest run Dagster records (one op that does nothing, on the same SQLite instance).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imagen_pipeline.cli.instance import DEFAULT_INSTANCE_YAML

BIN = Path(sys.executable).parent
ONE_OP_RUN = """
import dagster as dg

@dg.op
def noop() -> None:
    pass

@dg.job
def one_op() -> None:
    noop()

with dg.DagsterInstance.get() as instance:
    assert one_op.execute_in_process(instance=instance).success
"""
"""The cheapest run Dagster records: one op, the same SQLite instance as imagen generate.
What imagen generate costs beyond it is the pipeline's own."""

COMMANDS: dict[str, list[str]] = {
    "import_dagster": [sys.executable, "-c", "import dagster"],
    "one-op Dagster run": [sys.executable, "-c", ONE_OP_RUN],
    "imagen --help": [str(BIN / "imagen"), "--help"],
    "imagen config sample": [str(BIN / "imagen"), "config", "sample"],
    "imagen config validate": [str(BIN / "imagen"), "config", "validate"],
    "imagen backends": [str(BIN / "imagen"), "backends"],
    "imagen generate (mock)": [str(BIN / "imagen"), "generate", "a kite", "--size", "64x64"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="imagen-cli-") as workdir:
        home = Path(workdir) / "dagster_home"
        home.mkdir()
        # The instance `imagen generate` makes for itself when DAGSTER_HOME is not set; the
        # one-op floor runs on the same.
        (home / "dagster.yaml").write_text(DEFAULT_INSTANCE_YAML, encoding="utf-8")
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("IMAGEN_CONFIG", "IMAGEN_DATABASE_URL")
        }
        env.update(DAGSTER_HOME=str(home), HOME=workdir)
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                started = time.perf_counter()
                subprocess.run(command, cwd=workdir, env=env, check=True, capture_output=True)
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["import_dagster"]
    results = {
        "import_dagster_s": round(base, 2),
        "repeats": args.repeats,
        "median_s": {name: round(value, 2) for name, value in medians.items()},
        "ratio_to_import_dagster": {
            name: round(value / base, 2) for name, value in medians.items()
        },
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

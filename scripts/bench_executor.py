"""Measure `dagster job execute` of generate_image with the in-process vs multiprocess executor.

Usage: .venv/bin/python scripts/bench_executor.py [--runs N]

Each variant runs N times as a fresh `dagster job execute` process (what README command 1
and a daemon-launched run pay), on a temporary SQLite instance, with the mock backend.
Reports wall time per command and the run's own duration (RUN_START -> RUN_SUCCESS).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from imagen_pipeline.defs.jobs import generate_image_graph
from imagen_pipeline.defs.resources import ImagenDatabaseResource, load_resources

REPO_ROOT = Path(__file__).resolve().parents[1]


def in_process_job() -> dg.JobDefinition:
    """generate_image with the in-process executor (the shipped choice)."""
    return generate_image_graph.to_job(
        name="generate_image",
        executor_def=dg.in_process_executor,
        resource_defs={**load_resources(), "imagen_db": ImagenDatabaseResource()},
    )


def multiprocess_job() -> dg.JobDefinition:
    """generate_image with Dagster's default multiprocess executor."""
    return generate_image_graph.to_job(
        name="generate_image",
        executor_def=dg.multiprocess_executor,
        resource_defs={**load_resources(), "imagen_db": ImagenDatabaseResource()},
    )


def run_variant(attribute: str, runs: int) -> tuple[list[float], list[float]]:
    """Wall times of the CLI and run durations recorded by Dagster, in seconds."""
    walls, durations = [], []
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": home,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        }
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(
                [
                    "dagster", "job", "execute", "-f", __file__, "-a", attribute,
                    "-c", str(REPO_ROOT / "examples" / "generate.yaml"),
                ],
                cwd=home, env=env, check=True, capture_output=True,
            )  # fmt: skip
            walls.append(time.perf_counter() - started)
        with dg.DagsterInstance.from_config(home) as instance:
            for run in instance.get_run_records():
                durations.append(run.end_time - run.start_time)
    return walls, durations


def main() -> None:
    """Run both variants and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| executor | runs | CLI wall p50 (s) | CLI wall max (s) | run duration p50 (s) |")
    print("|---|---|---|---|---|")
    for label, attribute in (
        ("in_process", "in_process_job"),
        ("multiprocess", "multiprocess_job"),
    ):
        walls, durations = run_variant(attribute, args.runs)
        print(
            f"| {label} | {args.runs} | {statistics.median(walls):.2f} | {max(walls):.2f} | "
            f"{statistics.median(durations):.2f} |"
        )


if __name__ == "__main__":
    main()

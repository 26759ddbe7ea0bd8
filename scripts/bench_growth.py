"""Growth benchmark (issue 27): what each image leaves in the Dagster instance, and what is
left after the retention clean-up.

The production stack (scripts/dagster.postgres.yaml: Celery launcher, ``imagen worker``,
``dagster-daemon``, mock backend) on a fresh database. For each round it makes N images
through ``imagen.jobs``, counts the Dagster rows (``runs``, ``run_tags``, ``event_logs``),
the bytes of Dagster's tables and the files under ``$DAGSTER_HOME/storage`` (each run's
compute logs and step outputs, the sensor ticks' captured logs),
then runs ``imagen housekeeping --older-than 0s`` (every finished run) and counts again.
Tables are vacuumed after the clean-up, as autovacuum would: Postgres reuses the space of
deleted rows, it does not give it back, so with retention the bytes stop growing rather
than shrink. Prints JSON with ``import_dagster_s``.

    .venv/bin/python scripts/bench_growth.py --rounds 20 60
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_queue import BIN, Options, Stack, import_dagster_s, running_stack

DAGSTER_TABLES = ("runs", "run_tags", "event_logs")


def footprint(stack: Stack) -> dict[str, int]:
    """Rows of Dagster's main tables, bytes of all of Dagster's tables, files under
    ``$DAGSTER_HOME/storage``."""
    with psycopg.connect(stack.url, autocommit=True) as conn:
        counts = {
            f"{table}_rows": conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in DAGSTER_TABLES
        }
        [(table_bytes,)] = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'"
        ).fetchall()
    storage = stack.workdir / "dagster_home" / "storage"
    files = [path for path in storage.rglob("*") if path.is_file()] if storage.exists() else []
    return {
        **counts,
        "dagster_table_bytes": int(table_bytes),
        "run_storage_files": len(files),
        "run_storage_bytes": sum(path.stat().st_size for path in files),
    }


def per_image(before: dict[str, int], after: dict[str, int], images: int) -> dict[str, float]:
    return {key: round((after[key] - before[key]) / images, 1) for key in after}


def clean_up(stack: Stack) -> str:
    """``imagen housekeeping --older-than 0s`` on the stack's instance, then VACUUM."""
    completed = subprocess.run(
        [str(BIN / "imagen"), "housekeeping", "--older-than", "0s"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    with psycopg.connect(stack.url, autocommit=True) as conn:
        for table in DAGSTER_TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")
    return completed.stdout.strip()


def round_of(stack: Stack, images: int) -> dict[str, Any]:
    start = footprint(stack)
    stack.check_all_done(stack.wait_done(stack.insert(images), 600))
    made = footprint(stack)
    summary = clean_up(stack)
    cleaned = footprint(stack)
    storage = stack.workdir / "dagster_home" / "storage"
    left = sorted(str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file())
    return {
        "files_left": left[:5],
        "images": images,
        "per_image_made": per_image(start, made, images),
        "after_making": made,
        "after_cleanup": cleaned,
        "housekeeping": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, nargs="+", default=[20, 60])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    options = Options(
        fast_path=False,
        serial_latency=0.0,
        max_concurrent_runs=None,
        compute_logs=None,
        stock_storage=False,
    )
    results: dict[str, Any] = {"import_dagster_s": import_dagster_s(), "rounds": []}
    with running_stack(args.server_url, "celery", options) as stack:
        results["after_warm_up"] = footprint(stack)
        for images in args.rounds:
            results["rounds"].append(round_of(stack, images))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

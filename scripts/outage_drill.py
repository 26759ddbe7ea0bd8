"""Outage drill (issue 26): does an outage cost any job an attempt, a second image or its life?

The production stack (scripts/dagster.postgres.yaml: Celery launcher, a private Redis, the
two ``imagen worker`` processes of a cloud host and a GPU host, ``dagster-daemon``) on a
fresh database, then two drills, each timed by ``--outage-s`` (the issue's figure is 300):

- **redis**: jobs inserted and in flight (GPU jobs generating one at a time), Redis killed
  (nothing persisted: the tasks waiting in it are lost), more jobs inserted during the
  outage, Redis started again;
- **workers**: both workers killed, jobs inserted, the workers started again.

For each drill it prints the jobs done and failed, the images made per job, the attempts
and interruptions recorded, and how long after the part came back the last job was done,
with ``import_dagster_s`` (how fast this machine is today). Exit status 1 if a job did not
end ``done`` with one image and one attempt.

    .venv/bin/python scripts/outage_drill.py --outage-s 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_queue import Options, Stack, import_dagster_s, running_stack


def insert(stack: Stack, label: str, count: int, backend: str) -> list[int]:
    """``count`` jobs with prompts of their own (``<label> <n>``)."""
    with psycopg.connect(stack.url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO imagen.jobs (owner_user_id, prompt, backend, width, height) "
            "SELECT gen_random_uuid(), %s || ' ' || g, %s, 64, 64 "
            "FROM generate_series(1, %s) AS g RETURNING id",
            (label, backend, count),
        ).fetchall()
    return [row[0] for row in rows]


def jobs(stack: Stack, ids: list[int]) -> dict[int, dict[str, Any]]:
    with psycopg.connect(stack.url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT j.id, j.prompt, j.status, j.attempts, j.interruptions, j.error, "
            "j.progress_text, extract(epoch FROM j.finished_at) AS finished, "
            "(SELECT count(*) FROM imagen.images AS i WHERE i.job_id = j.id) AS images "
            "FROM imagen.jobs AS j WHERE j.id = ANY(%s)",
            (ids,),
        ).fetchall()
    return {row["id"]: row for row in rows}


def wait_settled(stack: Stack, ids: list[int], timeout_s: float) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = jobs(stack, ids)
        if all(row["status"] in ("done", "failed", "canceled") for row in rows.values()):
            return rows
        if time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def backend_calls(stack: Stack) -> Counter[str]:
    """Backend calls per prompt, from both mocks' call logs."""
    calls: Counter[str] = Counter()
    for name in ("calls.jsonl", "gpu_calls.jsonl"):
        path = stack.workdir / name
        if path.exists():
            calls.update(json.loads(line)["prompt"] for line in path.read_text().splitlines())
    return calls


def report(
    name: str, stack: Stack, rows: dict[int, dict[str, Any]], back_at: float
) -> dict[str, Any]:
    calls = backend_calls(stack)
    finished = [float(row["finished"]) for row in rows.values() if row["finished"] is not None]
    return {
        "drill": name,
        "jobs": len(rows),
        "status": dict(Counter(row["status"] for row in rows.values())),
        "images_per_job": dict(Counter(int(row["images"]) for row in rows.values())),
        "backend_calls_per_job": dict(Counter(calls[row["prompt"]] for row in rows.values())),
        "attempts": dict(Counter(int(row["attempts"]) for row in rows.values())),
        "interruptions": dict(Counter(int(row["interruptions"]) for row in rows.values())),
        "last_done_after_back_s": round(max(finished) - back_at, 1) if finished else None,
        "errors": sorted({row["error"] for row in rows.values() if row["status"] != "done"}),
    }


def redis_drill(stack: Stack, outage_s: float) -> dict[str, Any]:
    before = insert(stack, "redis-before", 6, "mock") + insert(stack, "redis-gpu", 4, "gpu")
    time.sleep(2)
    stack.kill("redis")
    during = insert(stack, "redis-during", 4, "mock")
    time.sleep(outage_s)
    stack.respawn("redis")
    back_at = time.time()
    rows = wait_settled(stack, before + during, outage_s + 600)
    return report("redis", stack, rows, back_at)


def workers_drill(stack: Stack, outage_s: float) -> dict[str, Any]:
    stack.kill("worker-cloud")
    stack.kill("worker-gpu")
    ids = insert(stack, "workers-mock", 4, "mock") + insert(stack, "workers-gpu", 2, "gpu")
    time.sleep(outage_s)
    waiting = {row["progress_text"] for row in jobs(stack, ids).values()}
    stack.respawn("worker-cloud")
    stack.respawn("worker-gpu")
    back_at = time.time()
    rows = wait_settled(stack, ids, outage_s + 600)
    return {**report("workers", stack, rows, back_at), "waiting_texts": sorted(waiting)}


def passed(result: dict[str, Any]) -> bool:
    return (
        result["status"] == {"done": result["jobs"]}
        and result["images_per_job"] == {1: result["jobs"]}
        and result["attempts"] == {1: result["jobs"]}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=300)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    options = Options(
        fast_path=False,
        serial_latency=2.0,
        max_concurrent_runs=None,
        compute_logs=None,
        stock_storage=False,
    )
    results = {"import_dagster_s": import_dagster_s(), "outage_s": args.outage_s}
    with running_stack(args.server_url, "celery", options) as stack:
        results["redis"] = redis_drill(stack, args.outage_s)
        results["workers"] = workers_drill(stack, args.outage_s)
    print(json.dumps(results, indent=2))
    sys.exit(0 if passed(results["redis"]) and passed(results["workers"]) else 1)


if __name__ == "__main__":
    main()

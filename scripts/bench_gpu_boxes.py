"""Benchmark one GPU box against two: does a second box double the throughput?

Usage:
    .venv/bin/python scripts/bench_gpu_boxes.py [--jobs 40] [--latency 2.0] [--warm-up 6]
        [--batches 1] [--skip-one-box] [--fast-path] [--compute-logs local|noop]
        [--dequeue-interval 0.5]
        [--server-url postgresql://postgres@127.0.0.1/postgres]

Starts the queue's real stack (scripts/bench_queue.py's Stack: dagster-daemon on the
production instance config, a throwaway database) and two loopback ComfyUI servers (the
test fake: one prompt at a time, --latency seconds per image through 20 sampler steps).
Dagster's limits come from `imagen config limits` arithmetic over the configured servers
(imagen_gpu = 4 slots, GPU run limit 5). Then --jobs rows go to a backend on one box, and
--jobs rows to a backend over both boxes (--batches times, one batch after the other), and
it reports for each batch the time from the first insert to the last done against the
ideal (jobs x latency / boxes), the share of images each box made, and the throughput
ratio two boxes / one box (over the median two-box batch). import_dagster_s says how fast
the machine is today.

Before the first measured batch, --warm-up jobs run on the two boxes (default 6, the GPU
run limit), so the stack is as a deployed one that has been running: every GPU worker
process, the webserver and the daemon have done their first runs. --warm-up 0 measures a
stack that just started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_queue import (
    BIN,
    REPO_ROOT,
    Options,
    Stack,
    add_instance_options,
    import_dagster_s,
    throwaway_database,
)

sys.path.insert(0, str(REPO_ROOT))  # the loopback ComfyUI server lives with the tests

from imagen_pipeline.backends.capacity import gpu_capacity
from imagen_pipeline.generate.setup import parse_setup
from imagen_pipeline_tests.fakes.comfyui_server import FakeComfyUI, running_fake_comfyui

STEPS = 20
"""Sampler steps of the flux-dev template: each takes latency / STEPS on the fake."""


def configure(stack: Stack, urls: list[str], run_limit: int | None) -> int:
    """Add the one-box and two-box backends to the stack's imagen.yaml, set Dagster's limits
    from them; returns the imagen_gpu pool limit."""
    config_path = stack.workdir / "imagen.yaml"
    config = yaml.safe_load(config_path.read_text())
    box = {"type": "comfyui", "workflow": "flux-dev", "poll_interval_s": 0.2}
    config["backends"]["one_box"] = {**box, "url": urls[0]}
    config["backends"]["two_boxes"] = {
        **box,
        "servers": [{"url": url, "label": f"box{n}", "slots": 2} for n, url in enumerate(urls)],
    }
    config_path.write_text(yaml.safe_dump(config))
    capacity = gpu_capacity(parse_setup(config, config_path).backends)
    instance_path = stack.workdir / "dagster_home" / "dagster.yaml"
    instance = yaml.safe_load(instance_path.read_text())
    for limit in instance["concurrency"]["runs"]["tag_concurrency_limits"]:
        if limit.get("value") == "imagen_gpu":
            limit["limit"] = run_limit or capacity.run_limit
    instance_path.write_text(yaml.safe_dump(instance))
    return capacity.op_pool_limit


def set_gpu_pool(stack: Stack, limit: int) -> None:
    subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", "imagen_gpu", str(limit)],
        env=stack.env,
        check=True,
        capture_output=True,
    )


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def prompt_spans(fake: FakeComfyUI, since: float) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of every prompt the fake executed after ``since``."""
    spans = []
    for prompt_id in fake.history_ids():
        entry = fake.history_entry(prompt_id) or {}
        stamps = {event: data["timestamp"] / 1000 for event, data in entry["status"]["messages"]}
        if stamps["execution_start"] >= since:
            spans.append((stamps["execution_start"], stamps["execution_success"]))
    return sorted(spans)


def timeline(fakes: list[FakeComfyUI], started: float, finished: float) -> dict[str, float]:
    """Where the time beyond the ideal went: insert -> first prompt executing on each box,
    how long a prompt took on the fake (execution start -> success; the ideal assumes
    exactly the latency), the boxes' idle time between their prompts, last prompt done ->
    last row done."""
    per_box = [spans for fake in fakes if (spans := prompt_spans(fake, started))]
    first = min(spans[0][0] for spans in per_box)
    last = max(spans[-1][1] for spans in per_box)
    idle = [sum(max(0.0, nxt[0] - prev[1]) for prev, nxt in pairwise(spans)) for spans in per_box]
    durations = [end - start for spans in per_box for start, end in spans]
    return {
        "insert_to_first_prompt_s": round(first - started, 2),
        "insert_to_first_prompt_per_box_s": [round(spans[0][0] - started, 2) for spans in per_box],
        "prompt_s_mean": round(sum(durations) / len(durations), 3),
        "box_idle_between_prompts_s": [round(value, 2) for value in idle],
        "last_prompt_to_last_done_s": round(finished - last, 2),
    }


def run_batch(
    stack: Stack,
    fakes: list[FakeComfyUI],
    backend: str,
    count: int,
    latency: float,
    boxes: int,
) -> dict[str, Any]:
    """``count`` jobs on ``backend`` at once: time to the last done, ideal, share per box,
    where the time beyond the ideal went, how busy the machine's cores were, and how many runs
    recorded a run failure (a healthy stack: none)."""
    busy_before, total_before = cpu_ticks()
    started = time.time()
    ids = stack.insert(count, backend=backend)
    rows = stack.wait_done(ids, 1800)
    stack.check_all_done(rows)
    finished = max(float(row["finished"]) for row in rows.values())
    spans = stack.spans(rows)
    first_id = min(spans, key=lambda job: spans[job]["pickup"] + spans[job]["queue_and_launch"])
    with psycopg.connect(stack.url) as conn:
        servers = conn.execute(
            "SELECT coalesce(backend_server, 'one box') FROM imagen.images WHERE job_id = ANY(%s)",
            (ids,),
        ).fetchall()
    busy_after, total_after = cpu_ticks()
    ideal = count * latency / boxes
    total = finished - started
    return {
        "backend": backend,
        "jobs": count,
        "boxes": boxes,
        "total_s": round(total, 1),
        "ideal_s": round(ideal, 1),
        "ratio": round(total / ideal, 3),
        "images_per_box": dict(Counter(server for (server,) in servers)),
        "median_phases_s": stack.phases(rows),
        "first_run_s": spans[first_id],
        **timeline(fakes[:boxes], started, finished),
        "cpu_busy": round((busy_after - busy_before) / (total_after - total_before), 2),
        "runs_marked_failed": stack.runs_marked_failed(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--run-limit", type=int, help="GPU run limit instead of the computed one")
    parser.add_argument("--max-concurrent-runs", type=int, help="instead of the production 6")
    parser.add_argument("--skip-one-box", action="store_true")
    parser.add_argument(
        "--batches", type=int, default=1, help="two-box batches, one after the other"
    )
    add_instance_options(parser)
    parser.add_argument(
        "--warm-up", type=int, default=6, help="jobs on the two boxes before measuring"
    )
    parser.add_argument(
        "--fast-path",
        action="store_true",
        help="rows picked up by `imagen queue listen` (NOTIFY) too, not the sensor alone",
    )
    args = parser.parse_args()

    results: dict[str, Any] = {"import_dagster_s": import_dagster_s()}
    with ExitStack() as stack_of:
        url = stack_of.enter_context(throwaway_database(args.server_url))
        workdir = Path(stack_of.enter_context(tempfile.TemporaryDirectory(prefix="imagen-boxes-")))
        fakes = [stack_of.enter_context(running_fake_comfyui()) for _ in range(2)]
        for fake in fakes:
            fake.step_delay_s = args.latency / STEPS
            fake.preview_frames = False
        stack = Stack(
            url,
            workdir,
            "celery",
            Options(
                args.fast_path,
                args.latency,
                args.max_concurrent_runs,
                args.compute_logs,
                False,
                args.dequeue_interval,
            ),
        )
        pool = configure(stack, [fake.url for fake in fakes], args.run_limit)
        stack.start()
        set_gpu_pool(stack, pool)
        results["imagen_gpu_pool"] = pool
        results["max_concurrent_runs"] = stack.max_concurrent_runs
        results["fast_path"] = args.fast_path
        results["compute_logs"] = stack.compute_logs
        results["dequeue_interval_s"] = stack.dequeue_interval
        try:
            stack.check_all_done(stack.wait_done(stack.insert(1), 300))
            if args.warm_up:
                warm_up = stack.insert(args.warm_up, backend="two_boxes")
                stack.check_all_done(stack.wait_done(warm_up, 600))
            results["warm_up_jobs"] = args.warm_up
            one = None
            if not args.skip_one_box:
                one = run_batch(stack, fakes, "one_box", args.jobs, args.latency, 1)
                print(json.dumps(one), flush=True)
            two = []
            for _ in range(args.batches):
                two.append(run_batch(stack, fakes, "two_boxes", args.jobs, args.latency, 2))
                print(json.dumps(two[-1]), flush=True)
        finally:
            stack.stop()
        results["one_box"], results["two_boxes"] = one, two
        totals = [batch["total_s"] for batch in two]
        results["two_boxes_total_s"] = totals
        results["two_boxes_ratio"] = [batch["ratio"] for batch in two]
        if one is not None:
            results["throughput_two_over_one"] = round(
                one["total_s"] / statistics.median(totals), 2
            )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

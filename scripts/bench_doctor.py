"""How long ``imagen doctor`` takes on a healthy stack and with a part gone.

Usage:
    .venv/bin/python scripts/bench_doctor.py [--repeats 5]
        [--server-url postgresql://postgres@127.0.0.1/postgres]

Starts the stack of scripts/bench_queue.py with its fast path (a throwaway database,
`dagster-daemon`, `dagster-webserver`, `imagen queue listen`, a private `redis-server` and two
`imagen worker`s), warmed up by one job, then runs `imagen doctor --json` --repeats times in
each of three states, one after the other:

- healthy: every process running;
- broker silent: the broker URL points at a port that accepts connections and never answers
  (a listening socket nobody accepts from, like a hung Redis), so every Redis call waits for
  its timeout;
- Redis down: the stack's `redis-server` killed (connections refused at once).

Prints one JSON line per state: median and highest wall time, the exit status, and the
statuses of the checks (how many ok, warn, fail, skip, and which failed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_queue import BIN, Options, Stack, running_stack


def run_doctor(env: dict[str, str], repeats: int) -> dict[str, Any]:
    """``imagen doctor --json`` ``repeats`` times: wall times, exit status, check statuses."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [str(BIN / "imagen"), "doctor", "--json"], env=env, capture_output=True, text=True
        )
        times.append(time.perf_counter() - started)
    checks = json.loads(done.stdout)
    return {
        "median_s": round(statistics.median(times), 2),
        "max_s": round(max(times), 2),
        "exit": done.returncode,
        "statuses": dict(Counter(check["status"] for check in checks)),
        "failed": sorted(check["check"] for check in checks if check["status"] == "fail"),
    }


def redis_process(stack: Stack) -> subprocess.Popen[bytes]:
    """The stack's ``redis-server``."""
    return next(p for p in stack.processes if "redis-server" in str(p.args[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1/postgres")
    args = parser.parse_args()
    options = Options(
        fast_path=True,
        serial_latency=0.0,
        max_concurrent_runs=None,
        compute_logs=None,
        stock_storage=False,
    )
    with running_stack(args.server_url, "celery", options) as stack:
        env = stack.env
        results = {"healthy": run_doctor(env, args.repeats)}
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)
            broker = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
            results["broker silent"] = run_doctor(
                {**env, "IMAGEN_CELERY_BROKER_URL": broker}, args.repeats
            )
        redis = redis_process(stack)
        os.killpg(redis.pid, signal.SIGKILL)
        redis.wait(timeout=30)
        results["redis down"] = run_doctor(env, args.repeats)
    for state, result in results.items():
        print(json.dumps({"state": state, **result}))


if __name__ == "__main__":
    main()

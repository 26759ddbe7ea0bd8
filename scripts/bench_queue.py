"""Benchmark the imagen.jobs queue end to end on this machine.

Usage:
    .venv/bin/python scripts/bench_queue.py [--sequential 30] [--burst 100] [--serial 20]
        [--serial-latency 2.0] [--fast-path] [--max-concurrent-runs N]
        [--compute-logs local|noop] [--dequeue-interval 0.5] [--stock-storage]
        [--launcher default|celery ...]
        [--server-url postgresql://postgres@127.0.0.1/postgres]

A count of 0 skips that part.

Starts a real stack on a throwaway database: `dagster-daemon run` on a Postgres-backed
instance and, with --fast-path, `dagster-webserver` plus `imagen queue listen`. The instance
config follows --launcher (default: celery): `celery` is scripts/dagster.postgres.yaml (the
production config, with its Celery run launcher) plus a private `redis-server` and two
`imagen worker`s on this machine (the default queue with max_concurrent_runs processes,
imagen_gpu with the GPU run limit); `default` the same without its run_launcher block
(Dagster's default launcher, a fresh interpreter per run). With several launchers, each
part runs once per launcher, one after the other, each on a fresh stack and database, so
the launchers share the machine's state of the moment.
Jobs are INSERTed with plain SQL as flexsiebels does. Reports, per launcher:

- sequential: insert -> done latency (created_at -> finished_at, database clock) p50/p95;
- burst: N rows inserted at once, time until all are done, rows per minute;
- serial: N jobs on a mock that holds one GPU lock for --serial-latency seconds per image;
  total time against the ideal N x latency (does the GPU wait for Dagster?);
- peak RSS and PSS of every process the stack started (daemon, code servers, runs,
  webserver, and for celery Redis and the workers), the highest over its parts; PSS shares
  each page among the processes that map it, so it is what the stack occupies;
- import_dagster_s (once): how long ``import dagster`` takes here, to compare machines and
  days.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import httpx
import psycopg
import yaml
from psycopg import sql

from imagen_pipeline.db.migrate import migrate
from imagen_pipeline.defs.run_errors import run_step_failure

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TERMINAL = ("done", "failed", "canceled")
LAUNCHERS = ("default", "celery")
TOPOLOGIES = ("two-hosts", "one-host")
PRODUCTION_INSTANCE = REPO_ROOT / "scripts" / "dagster.postgres.yaml"
GPU_QUEUE = "imagen_gpu"

MOCK_CLIENT_OPTIONS = {"3.cfg": {"min": 1, "max": 10}}
"""What a web client may set on the stack's mock (scripts/fuzz_queue.py's valid rows use it)."""


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name``."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    """A migrated database that is dropped afterwards."""
    name = f"imagen_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(server_url, name)
    try:
        migrate(url, bootstrap=True)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class RssSampler(threading.Thread):
    """Samples the summed memory of the process groups the stack started: RSS (pages a
    process shares with others, such as a forked worker's with its parent, counted once per
    process) and PSS (each shared page divided among the processes that share it, so the sum
    is what the stack really occupies), keeping the PSS of each named group at the peak."""

    def __init__(self, groups: dict[int, str]) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.peak_bytes = 0
        self.peak_pss_bytes = 0
        self.peak_pss_by_name: dict[str, int] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.25):
            total, by_name = memory_of(self.groups)
            self.peak_bytes = max(self.peak_bytes, total)
            pss = sum(by_name.values())
            if pss > self.peak_pss_bytes:
                self.peak_pss_bytes = pss
                self.peak_pss_by_name = by_name


def memory_of(groups: dict[int, str]) -> tuple[int, dict[str, int]]:
    """Summed RSS of every process in ``groups`` (process group id -> name), and PSS per
    name."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    by_name: dict[str, int] = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            stat = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
            name = groups.get(int(stat[2]))  # field 5: process group
            if name is None:
                continue
            total += int((pid_dir / "statm").read_text().split()[1]) * page
            by_name[name] = by_name.get(name, 0) + proportional_set_size(pid_dir)
        except (OSError, IndexError, ValueError):
            continue
    return total, by_name


def megabytes(by_name: dict[str, int]) -> dict[str, int]:
    """Bytes per name as whole MiB, largest first."""
    return {
        name: round(size / 2**20) for name, size in sorted(by_name.items(), key=lambda i: -i[1])
    }


def proportional_set_size(pid_dir: Path) -> int:
    """A process's PSS in bytes, from ``/proc/<pid>/smaps_rollup``."""
    for line in (pid_dir / "smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


class Options(NamedTuple):
    """How every stack of one invocation is set up (the command line)."""

    fast_path: bool
    serial_latency: float
    max_concurrent_runs: int | None
    compute_logs: str | None
    stock_storage: bool
    dequeue_interval: float | None = None
    """Seconds between the daemon's looks at the run queue, instead of the shipped 0.5."""
    topology: str = "two-hosts"
    """``two-hosts``: the processes of a main host and a GPU host on this machine
    (``dagster-daemon`` and ``dagster-webserver`` on workspace.yaml, each with a code server
    of its own; a cloud and a GPU ``imagen worker``). ``one-host``:
    docs/deployment.md's one-host set-up (one ``dagster code-server`` for ``imagen daemon``
    and the webserver, one ``imagen worker`` serving both queues)."""
    worker_args: tuple[str, ...] = ()
    """Extra options of every ``imagen worker``."""


class Stack:
    """The processes of one benchmark stack and the database they share."""

    def __init__(self, url: str, workdir: Path, launcher: str, options: Options) -> None:
        self.url = url
        self.workdir = workdir
        self.launcher = launcher
        self.fast_path = options.fast_path
        self.topology = options.topology
        self.worker_args = options.worker_args
        serial_latency = options.serial_latency
        max_concurrent_runs = options.max_concurrent_runs
        compute_logs = options.compute_logs
        stock_storage = options.stock_storage
        home = workdir / "dagster_home"
        home.mkdir()
        instance = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
        if launcher == "default":
            del instance["run_launcher"]
        if max_concurrent_runs:
            instance["concurrency"]["runs"]["max_concurrent_runs"] = max_concurrent_runs
        self.max_concurrent_runs = instance["concurrency"]["runs"]["max_concurrent_runs"]
        if compute_logs == "noop":
            instance["compute_logs"] = {
                "module": "dagster.core.storage.noop_compute_log_manager",
                "class": "NoOpComputeLogManager",
            }
        elif compute_logs == "local":
            # Dagster's default manager: the same files, echoed to the console by a `tail`
            # and a watcher process per stream and run.
            instance.pop("compute_logs", None)
        if options.dequeue_interval is not None:
            instance["run_coordinator"]["config"]["dequeue_interval_seconds"] = (
                options.dequeue_interval
            )
        self.dequeue_interval = instance["run_coordinator"]["config"]["dequeue_interval_seconds"]
        if stock_storage:
            # dagster-postgres as shipped: a new connection for every query.
            instance["storage"] = {"postgres": instance["storage"]["custom"]["config"]}
        self.storage = "stock postgres" if stock_storage else "pooled postgres"
        self.compute_logs = str(
            instance.get("compute_logs", {}).get("class", "LocalComputeLogManager")
        )
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
        config = {
            "default_backend": "mock",
            "output": {"directory": str(workdir / "out")},
            "backends": {
                "mock": {
                    "type": "mock",
                    "calls_log": str(workdir / "calls.jsonl"),
                    "client_options": MOCK_CLIENT_OPTIONS,
                },
                "gpu": {
                    "type": "mock",
                    "pool": "gpu",
                    "latency_s": serial_latency,
                    "serial_lock": str(workdir / "gpu.lock"),
                    "calls_log": str(workdir / "gpu_calls.jsonl"),
                },
            },
            # Every benchmark row has the same (no) owner: measure the pipeline, not the
            # per-owner limit (imagen_pipeline_tests/queue/test_fair_queue.py measures that).
            "queue": {"max_in_flight_per_owner": None},
        }
        (workdir / "imagen.yaml").write_text(yaml.safe_dump(config))
        self.port = 3300 + os.getpid() % 500
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": url,
            "IMAGEN_DATABASE_URL": url,
            "IMAGEN_CONFIG": str(workdir / "imagen.yaml"),
            "IMAGEN_WEBSERVER_URL": f"http://127.0.0.1:{self.port}",
        }
        if launcher == "celery":
            self.redis_port = free_port()
            self.env["IMAGEN_CELERY_BROKER_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        # A deployed package has its bytecode cached; without this every run worker would
        # compile imagen_pipeline anew where the environment sets PYTHONDONTWRITEBYTECODE.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.named: dict[str, subprocess.Popen[bytes]] = {}
        self.group_names: dict[int, str] = {}
        """Process group id (the spawned process' pid) -> its name."""
        self.idle_pss_by_name: dict[str, int] = {}
        self.commands: dict[str, list[str]] = {}
        self.sampler: RssSampler | None = None

    @property
    def gpu_run_limit(self) -> int:
        """The instance's run-queue limit on GPU runs, as its dagster.yaml says now (a
        benchmark may change it before :meth:`start`)."""
        instance = yaml.safe_load((self.workdir / "dagster_home" / "dagster.yaml").read_text())
        limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]
        return int(next(limit["limit"] for limit in limits if limit["value"] == GPU_QUEUE))

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start one process of the stack in its own process group, its output in
        ``<name>.log``; :attr:`named` keeps the newest process of each name."""
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            args,
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        self.group_names[process.pid] = name
        self.named[name] = process
        self.commands[name] = args
        return process

    def kill(self, name: str) -> None:
        """``kill -9`` the process group of the stack's process ``name``."""
        process = self.named[name]
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def respawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``name`` again with the command it was first started with."""
        return self.spawn(name, self.commands[name])

    def start(self) -> None:
        workspace = str(REPO_ROOT / "workspace.yaml")
        # As docs/deployment.md says for a new instance: explicit limits for both pools.
        for pool, limit in (("imagen_gpu", "2"), ("imagen_cloud", "8")):
            subprocess.run(
                [str(BIN / "dagster"), "instance", "concurrency", "set", pool, limit],
                env=self.env,
                check=True,
                capture_output=True,
            )
        if self.launcher == "celery":
            self.start_celery()
        if self.topology == "one-host":
            workspace = self.start_code_server()
            self.spawn("daemon", [str(BIN / "imagen"), "daemon", "-w", workspace])
        else:
            self.spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace])
        if self.fast_path:
            self.spawn(
                "webserver",
                [
                    str(BIN / "dagster-webserver"),
                    "-w",
                    workspace,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ],
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{self.port}/server_info").is_success:
                        break
                time.sleep(0.5)
            # The listener checks its webserver at start and exits when it does not answer.
            self.spawn("listener", [str(BIN / "imagen"), "queue", "listen"])

    def start_code_server(self) -> str:
        """``dagster api grpc`` on a free port, as the imagen-code-server unit;
        returns the workspace file that points at it."""
        port = free_port()
        self.spawn(
            "code-server",
            [
                str(BIN / "dagster"),
                "api",
                "grpc",
                "-m",
                "imagen_pipeline.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--location-name",
                "imagen_pipeline",
            ],
        )
        workspace = self.workdir / "workspace.code_server.yaml"
        location = {"host": "127.0.0.1", "port": port, "location_name": "imagen_pipeline"}
        workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": location}]}))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.3)
        return str(workspace)

    def start_celery(self) -> None:
        """A private Redis and the two workers of a GPU host and a cloud host."""
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise SystemExit("--launcher celery needs redis-server on PATH")
        self.spawn(
            "redis",
            [redis_server, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", ""],
        )
        if self.topology == "one-host":
            workers = {
                "main": [
                    "--queue",
                    "dagster",
                    "--queue",
                    GPU_QUEUE,
                    "--concurrency",
                    str(self.max_concurrent_runs),
                ]
            }
        else:
            workers = {
                "cloud": ["--concurrency", str(self.max_concurrent_runs)],
                "gpu": ["--queue", GPU_QUEUE, "--concurrency", str(self.gpu_run_limit)],
            }
        for name, args in workers.items():
            self.spawn(
                f"worker-{name}",
                [
                    str(BIN / "imagen"),
                    "worker",
                    "--hostname",
                    f"{name}@bench",
                    *args,
                    *self.worker_args,
                ],
            )
        deadline = time.monotonic() + 120
        for name in workers:
            log = self.workdir / f"worker-{name}.log"
            while f"{name}@bench ready." not in log.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"imagen worker {name} did not start; see {log}")
                time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait(timeout=30)

    def insert(self, count: int, backend: str = "mock") -> list[int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "INSERT INTO imagen.jobs (owner_user_id, prompt, backend, width, height) "
                "SELECT gen_random_uuid(), 'benchmark lighthouse ' || g, %s, 256, 256 "
                "FROM generate_series(1, %s) AS g RETURNING id",
                (backend, count),
            ).fetchall()
        return [row[0] for row in rows]

    def check_all_done(self, rows: dict[int, dict[str, Any]]) -> None:
        """Raise, with the operator's error text of each failed run (the stack's instance
        is gone once the benchmark exits), unless every row is done."""
        failed = {i: r for i, r in rows.items() if r["status"] != "done"}
        if not failed:
            return
        os.environ.update({k: self.env[k] for k in ("DAGSTER_HOME", "DAGSTER_PG_URL")})
        with dg.DagsterInstance.get() as instance:
            why = {
                i: (run_step_failure(instance, r["run_id"]) if r["run_id"] else None) or r["error"]
                for i, r in failed.items()
            }
        raise RuntimeError(f"jobs did not succeed: {why}")

    def spans(self, rows: dict[int, dict[str, Any]]) -> dict[int, dict[str, float]]:
        """Per row: insert -> run created (pickup) -> run started -> run ended (run)."""
        os.environ.update({k: self.env[k] for k in ("DAGSTER_HOME", "DAGSTER_PG_URL")})
        spans = {}
        with dg.DagsterInstance.get() as instance:
            for row in rows.values():
                record = finished_run_record(instance, row["id"])
                assert record.start_time is not None and record.end_time is not None
                created = record.create_timestamp.timestamp()
                spans[row["id"]] = {
                    "pickup": round(created - float(row["created"]), 2),
                    "queue_and_launch": round(record.start_time - created, 2),
                    "run": round(record.end_time - record.start_time, 2),
                }
        return spans

    def runs_marked_failed(self, rows: dict[int, dict[str, Any]]) -> int:
        """How many runs of ``rows``' jobs recorded a run failure, including runs that went
        on to succeed (run monitoring misjudging a live run); a healthy stack has none."""
        os.environ.update({k: self.env[k] for k in ("DAGSTER_HOME", "DAGSTER_PG_URL")})
        failed = 0
        with dg.DagsterInstance.get() as instance:
            for row in rows.values():
                for record in instance.get_run_records(
                    filters=dg.RunsFilter(tags={"imagen/job_id": str(row["id"])})
                ):
                    failures = instance.get_records_for_run(
                        record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
                    ).records
                    failed += bool(failures)
        return failed

    def phases(self, rows: dict[int, dict[str, Any]]) -> dict[str, float]:
        """Median time per phase over ``rows`` (see :meth:`spans`)."""
        spans = list(self.spans(rows).values())
        return {
            name: round(statistics.median(span[name] for span in spans), 2) for name in spans[0]
        }

    def wait_done(self, ids: list[int], timeout_s: float) -> dict[int, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            with psycopg.connect(self.url) as conn:
                cursor = conn.execute(
                    "SELECT id, status, error, run_id, extract(epoch FROM created_at) AS created, "
                    "extract(epoch FROM finished_at) AS finished FROM imagen.jobs "
                    "WHERE id = ANY(%s)",
                    (ids,),
                )
                columns = [c.name for c in cursor.description or []]
                rows = {r[0]: dict(zip(columns, r, strict=True)) for r in cursor.fetchall()}
            if all(row["status"] in TERMINAL for row in rows.values()):
                return rows
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs not done after {timeout_s}s: {rows}")
            time.sleep(0.05)


def finished_run_record(
    instance: dg.DagsterInstance, job_id: int, timeout_s: float = 30
) -> dg.RunRecord:
    """The newest run of ``job_id`` once it has ended (the row is marked done by the run's
    last step, a moment before the run records its end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        [record] = instance.get_run_records(
            filters=dg.RunsFilter(tags={"imagen/job_id": str(job_id)}), limit=1
        )
        if record.end_time is not None or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def bench_sequential(stack: Stack, count: int) -> dict[str, Any]:
    """Insert one job at a time and wait for it: insert -> done latency.

    Jobs arrive after a random pause: with a fixed one, the insert-to-done cycle locks in
    phase with the daemon's run queue loop and the median moves by up to a second
    from one run of the script to the next.
    """
    pauses = random.Random(0)
    latencies, all_rows = [], {}
    for _ in range(count):
        rows = stack.wait_done(stack.insert(1), 120)
        stack.check_all_done(rows)
        all_rows.update(rows)
        (row,) = rows.values()
        latencies.append(float(row["finished"] - row["created"]))
        time.sleep(pauses.uniform(0.3, 1.3))
    return {
        "jobs": len(latencies),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(percentile(latencies, 0.95), 2),
        "max_s": round(max(latencies), 2),
        "median_phases_s": stack.phases(all_rows),
    }


def bench_burst(stack: Stack, count: int) -> dict[str, Any]:
    """Insert ``count`` jobs at once: time until the last is done."""
    started = time.time()
    rows = stack.wait_done(stack.insert(count), 1800)
    stack.check_all_done(rows)
    elapsed = max(float(r["finished"]) for r in rows.values()) - started
    return {
        "jobs": count,
        "total_s": round(elapsed, 1),
        "rows_per_min": round(count / elapsed * 60, 1),
        "median_phases_s": stack.phases(rows),
    }


def bench_serial(stack: Stack, count: int, latency_s: float) -> dict[str, Any]:
    """``count`` jobs on the serial GPU mock: does the GPU wait for Dagster?"""
    started = time.time()
    rows = stack.wait_done(stack.insert(count, backend="gpu"), 1800)
    stack.check_all_done(rows)
    finished = max(float(r["finished"]) for r in rows.values())
    calls = [
        json.loads(line) for line in (stack.workdir / "gpu_calls.jsonl").read_text().splitlines()
    ]
    ideal = count * latency_s
    first_call = min(datetime.fromisoformat(c["at"]).timestamp() for c in calls)
    first_row = rows[min(rows)]
    return {
        "jobs": count,
        "latency_s": latency_s,
        "backend_calls": len(calls),
        "total_s": round(finished - started, 1),
        "ideal_s": ideal,
        "ratio": round((finished - started) / ideal, 3),
        "first_call_to_last_done_s": round(finished - first_call, 1),
        "insert_to_first_call_s": round(first_call - float(first_row["created"]), 2),
        "first_job_phases_s": stack.spans({first_row["id"]: first_row})[first_row["id"]],
    }


IDLE_SETTLE_S = 10
"""Seconds a stack idles after its warm-up job before its idle memory is read."""


def import_dagster_s(repeats: int = 5) -> float:
    """Median wall time of ``python -c "import dagster"``: how fast this machine is today.

    A run worker starts with that import, so figures from two days compare through it.
    """
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import dagster"], check=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 2)


@contextmanager
def running_stack(server_url: str, launcher: str, options: Options) -> Iterator[Stack]:
    """A started stack for ``launcher`` on a fresh database, warmed up by one job."""
    with (
        throwaway_database(server_url) as url,
        tempfile.TemporaryDirectory(prefix=f"imagen-bench-{launcher}-") as tmp,
    ):
        stack = Stack(url, Path(tmp), launcher, options)
        try:
            stack.start()
            stack.sampler = RssSampler(stack.group_names)
            stack.sampler.start()
            stack.check_all_done(stack.wait_done(stack.insert(1), 300))
            # Idle: the warm-up job done, the run's process (if any) gone, a few sensor ticks.
            time.sleep(IDLE_SETTLE_S)
            stack.idle_pss_by_name = memory_of(stack.group_names)[1]
            yield stack
        finally:
            if stack.sampler is not None:
                stack.sampler.stop_event.set()
                stack.sampler.join()
            stack.stop()


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures to compare launchers by."""
    return {
        "sequential_p50_s": result.get("sequential", {}).get("p50_s"),
        "sequential_p95_s": result.get("sequential", {}).get("p95_s"),
        "burst_rows_per_min": result.get("burst", {}).get("rows_per_min"),
        "serial_total_s": result.get("serial", {}).get("total_s"),
        "peak_rss_mb": result.get("peak_rss_mb"),
        "peak_pss_mb": result.get("peak_pss_mb"),
        "idle_pss_mb": result.get("idle_pss_mb"),
    }


def add_instance_options(parser: argparse.ArgumentParser) -> None:
    """The options that change the production instance config: --compute-logs and
    --dequeue-interval (Options.compute_logs, Options.dequeue_interval)."""
    parser.add_argument(
        "--compute-logs",
        choices=("local", "noop"),
        help="instead of the shipped FileComputeLogManager: Dagster's default (local) or none",
    )
    parser.add_argument(
        "--dequeue-interval",
        type=float,
        help="seconds between the daemon's looks at the run queue (shipped: 0.5)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--serial", type=int, default=20)
    parser.add_argument("--serial-latency", type=float, default=2.0)
    parser.add_argument("--fast-path", action="store_true", help="webserver + imagen queue listen")
    parser.add_argument(
        "--max-concurrent-runs", type=int, help="override concurrency.runs.max_concurrent_runs"
    )
    add_instance_options(parser)
    parser.add_argument(
        "--stock-storage",
        action="store_true",
        help="dagster-postgres' own storage (NullPool) instead of PooledPostgresStorage",
    )
    parser.add_argument(
        "--launcher",
        nargs="+",
        choices=LAUNCHERS,
        default=["celery"],
        help="run launchers to compare (each part runs once per launcher, in this order)",
    )
    parser.add_argument(
        "--topology",
        nargs="+",
        choices=TOPOLOGIES,
        default=["two-hosts"],
        help="process layouts to compare (Options.topology), each with every launcher",
    )
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="an extra option of every imagen worker (repeatable), e.g. --worker-arg=--no-preload",
    )
    args = parser.parse_args()
    options = Options(
        fast_path=args.fast_path,
        serial_latency=args.serial_latency,
        max_concurrent_runs=args.max_concurrent_runs,
        compute_logs=args.compute_logs,
        stock_storage=args.stock_storage,
        dequeue_interval=args.dequeue_interval,
        worker_args=tuple(args.worker_arg),
    )
    variants = [(launcher, topology) for topology in args.topology for launcher in args.launcher]

    def label(launcher: str, topology: str) -> str:
        return launcher if len(args.topology) == 1 else f"{launcher}/{topology}"

    parts = {
        "sequential": (args.sequential, lambda stack: bench_sequential(stack, args.sequential)),
        "burst": (args.burst, lambda stack: bench_burst(stack, args.burst)),
        "serial": (
            args.serial,
            lambda stack: bench_serial(stack, args.serial, args.serial_latency),
        ),
    }

    results: dict[str, Any] = {
        "fast_path": args.fast_path,
        "cpus": os.cpu_count(),
        "import_dagster_s": import_dagster_s(),
        "worker_args": list(options.worker_args),
        "launchers": {label(*variant): {} for variant in variants},
    }
    for part, (count, bench) in parts.items():
        if not count:
            continue
        for launcher, topology in variants:
            result = results["launchers"][label(launcher, topology)]
            with running_stack(
                args.server_url, launcher, options._replace(topology=topology)
            ) as stack:
                result.update(
                    max_concurrent_runs=stack.max_concurrent_runs,
                    compute_logs=stack.compute_logs,
                    dequeue_interval_s=stack.dequeue_interval,
                    storage=stack.storage,
                    topology=topology,
                )
                result[part] = bench(stack)
            assert stack.sampler is not None
            peak = round(stack.sampler.peak_bytes / 2**20)
            result["peak_rss_mb"] = max(peak, result.get("peak_rss_mb", 0))
            peak_pss = round(stack.sampler.peak_pss_bytes / 2**20)
            if peak_pss > result.get("peak_pss_mb", 0):
                result["peak_pss_mb"] = peak_pss
                result["peak_pss_by_process_mb"] = megabytes(stack.sampler.peak_pss_by_name)
            idle = stack.idle_pss_by_name
            result.setdefault("idle_pss_mb", round(sum(idle.values()) / 2**20))
            result.setdefault("idle_pss_by_process_mb", megabytes(idle))
            print(
                json.dumps({"variant": label(launcher, topology), part: result[part]}), flush=True
            )
    results["summary"] = {name: summary(result) for name, result in results["launchers"].items()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Where runs go with the Celery run launcher: Redis answers, and a live ``imagen worker``
serves every queue runs are routed to (read from the worker registry, as the jobs sensor's
holds are)."""

from __future__ import annotations

import socket
import time

import redis

from imagen_pipeline.defs.sensors import worker_queues
from imagen_pipeline.doctor.report import Check, elapsed_ms, redact_url
from imagen_pipeline.doctor.stack import NETWORK_TIMEOUT_S, PartUnavailableError, Stack
from imagen_pipeline.instance.celery_launcher import (
    BROKER_ENV,
    ImagenCeleryRunLauncher,
    celery_urls,
)
from imagen_pipeline.instance.worker_registry import (
    RegistryUnavailableError,
    live_workers,
    registry_client,
)
from imagen_pipeline.queue.holds import LaunchPath
from imagen_pipeline.run_tags import GPU_QUEUE


def celery_launcher(stack: Stack) -> ImagenCeleryRunLauncher | str:
    """The instance's Celery launcher, or why the Celery checks do not apply."""
    launcher = stack.instance.get().run_launcher
    if not isinstance(launcher, ImagenCeleryRunLauncher):
        return (
            f"the run launcher is {type(launcher).__name__}: runs start as processes of the "
            "daemon, no broker or worker"
        )
    return launcher


def check_redis(stack: Stack) -> list[Check]:
    """PING the broker (and the result backend when it is another Redis)."""
    try:
        launcher = celery_launcher(stack)
    except PartUnavailableError as error:
        return [Check("redis", "skip", str(error))]
    if isinstance(launcher, str):
        return [Check("redis", "skip", launcher)]
    broker, backend = celery_urls()
    checks = []
    for role, url in (("broker", broker), ("result backend", backend)):
        if role == "result backend" and url == broker:
            continue
        name = "redis" if url == broker else "redis[backend]"
        if not url.startswith(("redis://", "rediss://")):
            checks.append(Check(name, "skip", f"the {role} is not Redis ({redact_url(url)})"))
            continue
        started = time.monotonic()
        try:
            client = redis.Redis.from_url(
                url, socket_timeout=NETWORK_TIMEOUT_S, socket_connect_timeout=NETWORK_TIMEOUT_S
            )
            client.ping()
            client.close()
        except (redis.RedisError, OSError) as error:
            checks.append(
                Check(
                    name,
                    "fail",
                    f"{redact_url(url)} ({role}) does not answer: {error}",
                    f"start Redis (systemctl start redis-server) or fix ${BROKER_ENV}; runs "
                    "cannot be sent meanwhile (jobs are held)",
                )
            )
            continue
        checks.append(
            Check(name, "ok", f"{redact_url(url)} ({role}) answers (PING {elapsed_ms(started)})")
        )
    return checks


def check_workers(stack: Stack) -> list[Check]:
    """One line per queue runs are routed to: the live workers serving it and their pool
    processes, or the command that starts one."""
    try:
        launcher = celery_launcher(stack)
        setup = stack.setup.get()
    except PartUnavailableError as error:
        return [Check("worker", "skip", str(error))]
    if isinstance(launcher, str):
        return [Check("worker", "skip", launcher)]
    routes = worker_queues(setup, LaunchPath(default_queue=launcher.default_queue))
    queues: dict[str, list[str]] = {launcher.default_queue: []}
    for backend, queue in sorted(routes.items()):
        queues.setdefault(queue, []).append(backend)
    try:
        workers = live_workers(registry_client(celery_urls()[1]))
    except RegistryUnavailableError as error:
        return [
            Check(
                "worker",
                "fail",
                f"live workers cannot be listed: {error}",
                "see the redis line; a worker announces itself in the result backend's Redis",
            )
        ]
    checks = []
    for queue, backends in queues.items():
        serving = [worker for worker in workers if queue in worker.queues]
        runs_there = (
            f"backend {', '.join(repr(b) for b in backends)} runs there"
            if backends
            else "launchpad runs without a queue tag go there"
        )
        if not serving:
            start = f"imagen worker --queue {queue} --hostname "
            checks.append(
                Check(
                    f"worker[{queue}]",
                    "fail",
                    f"no imagen worker serves queue {queue} ({runs_there}); its jobs are held",
                    f"on the GPU host: {start}gpu@<its name>"
                    if queue == GPU_QUEUE
                    else f"start one with: {start}imagen@{socket.gethostname()}",
                )
            )
            continue
        found = ", ".join(
            f"{worker.name} on {worker.host} ({worker.concurrency} processes)" for worker in serving
        )
        checks.append(Check(f"worker[{queue}]", "ok", f"{found} ({runs_there})"))
    return checks

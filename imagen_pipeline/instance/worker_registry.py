"""Which ``imagen worker`` processes are alive, which queues they serve and with how many
pool processes: each worker's main process keeps a key in the Celery result backend's
Redis (``imagen:worker:<name>``) that expires unless renewed.

Celery's own broadcast (``inspect().active_queues()``) waits its whole timeout for answers
on every call; the jobs sensor asks on every tick and ``imagen doctor`` on demand, so they
read these keys instead (one ``SCAN`` and one ``MGET``). A worker that dies, or loses its
Redis, stops renewing and drops out within :data:`TTL_S`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

KEY_PREFIX = "imagen:worker:"
BEAT_INTERVAL_S = 5.0
"""How often a worker renews its key."""
TTL_S = 20
"""How long a key outlives its last renewal: a worker silent this long is gone."""
REDIS_TIMEOUT_S = 2.0

logger = logging.getLogger("imagen.instance.worker_registry")


class RegistryUnavailableError(Exception):
    """The registry's Redis cannot be reached (or the result backend is not Redis)."""


@dataclass(frozen=True)
class WorkerBeacon:
    """One live worker as it announced itself."""

    name: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    started_at: float
    beat_at: float

    def dump(self) -> str:
        """The key's JSON value."""
        return json.dumps({**asdict(self), "queues": list(self.queues)})

    @classmethod
    def parse(cls, raw: str | bytes) -> WorkerBeacon | None:
        """A beacon from a key's value; None if it is not one (another program's key)."""
        try:
            data = json.loads(raw)
            return cls(
                name=str(data["name"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                queues=tuple(str(queue) for queue in data["queues"]),
                concurrency=int(data["concurrency"]),
                started_at=float(data["started_at"]),
                beat_at=float(data["beat_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def registry_client(backend_url: str) -> redis.Redis:
    """A client of the result backend's Redis, with short timeouts."""
    if not backend_url.startswith(("redis://", "rediss://")):
        raise RegistryUnavailableError(
            f"the Celery result backend is not Redis ({backend_url.split(':', 1)[0]}://), "
            "so live workers cannot be listed"
        )
    import redis

    return redis.Redis.from_url(
        backend_url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )


def publish(client: redis.Redis, beacon: WorkerBeacon) -> None:
    """Write (or renew) a worker's key."""
    client.set(KEY_PREFIX + beacon.name, beacon.dump(), ex=TTL_S)


def withdraw(client: redis.Redis, name: str) -> None:
    """Remove a worker's key (it is stopping)."""
    client.delete(KEY_PREFIX + name)


def live_workers(client: redis.Redis) -> list[WorkerBeacon]:
    """Every worker whose key is alive, by name; raises :class:`RegistryUnavailableError`
    when Redis does not answer."""
    import redis

    try:
        keys = sorted(client.scan_iter(match=KEY_PREFIX + "*", count=100))
        values = client.mget(keys) if keys else []
    except redis.RedisError as error:
        raise RegistryUnavailableError(f"Redis did not answer: {error}") from None
    beacons = (WorkerBeacon.parse(value) for value in values if value is not None)
    return sorted((beacon for beacon in beacons if beacon is not None), key=lambda b: b.name)


class Heartbeat:
    """Renews a worker's key every :data:`BEAT_INTERVAL_S` in a daemon thread until
    :meth:`stop`; a renewal that fails is logged once per outage and tried again."""

    def __init__(
        self,
        client: redis.Redis,
        beacon: Callable[[], WorkerBeacon],
        interval_s: float = BEAT_INTERVAL_S,
    ) -> None:
        self.client = client
        self.beacon = beacon
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imagen-heartbeat", daemon=True)
        self._failing = False

    def start(self) -> None:
        """Publish now, then keep renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and remove the key."""
        self._stop.set()
        self._thread.join(timeout=REDIS_TIMEOUT_S * 2)
        try:
            withdraw(self.client, self.beacon().name)
        except Exception as error:
            logger.warning("could not remove this worker's registry key: %s", error)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                publish(self.client, self.beacon())
                if self._failing:
                    logger.info("registry key renewed again")
                self._failing = False
            except Exception as error:
                if not self._failing:
                    logger.warning("could not renew this worker's registry key: %s", error)
                self._failing = True
            self._stop.wait(self.interval_s)


def beacon_for(
    name: str, host: str, pid: int, queues: list[str], concurrency: int, started_at: float
) -> Callable[[], WorkerBeacon]:
    """A beacon factory stamping each renewal with the current time."""

    def make() -> WorkerBeacon:
        return WorkerBeacon(name, host, pid, tuple(queues), concurrency, started_at, time.time())

    return make


def pool_processes_by_queue(workers: list[WorkerBeacon]) -> dict[str, int]:
    """How many pool processes serve each queue, over ``workers``."""
    serving: dict[str, int] = {}
    for worker in workers:
        for queue in worker.queues:
            serving[queue] = serving.get(queue, 0) + worker.concurrency
    return serving

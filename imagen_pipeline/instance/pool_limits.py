"""The Dagster limits in force beside the ones ``imagen.yaml`` needs
(:mod:`imagen_pipeline.backends.capacity`): the generate pools' limits stored in the
instance and the run queue's limit on GPU runs from its ``dagster.yaml``.

A pool is *set* when it has a limit of its own (``dagster instance concurrency set``,
``imagen config limits --apply``, ``imagen worker`` at start); otherwise the instance's
``concurrency.pools.default_limit`` applies, or no limit at all. ``imagen config limits``
and ``imagen doctor`` show both, ``imagen worker`` sets the pools that are not set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import dagster as dg

from imagen_pipeline.backends.capacity import GPU_POOL, gpu_capacity, pool_limits
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.setup import load_setup
from imagen_pipeline.run_tags import TAG_POOL

PoolState = Literal["ok", "unset", "differs"]

logger = logging.getLogger("imagen.instance.pool_limits")


@dataclass(frozen=True)
class PoolInForce:
    """One generate pool: the limit ``imagen.yaml`` needs and the one the instance applies."""

    pool: str
    computed: int
    limit: int | None
    """The limit in force; None: none (not set and no ``default_limit``)."""
    own: bool
    """True when the pool has a limit of its own, False when it runs on the default."""

    @property
    def state(self) -> PoolState:
        """``unset`` (on the default or unlimited), ``differs`` (set to another limit), ``ok``."""
        if not self.own:
            return "unset"
        return "ok" if self.limit == self.computed else "differs"

    def in_force(self) -> str:
        """The limit in force and where it comes from, for a person."""
        if self.own:
            return f"{self.limit} (set on the instance)"
        if self.limit is None:
            return "none (not set, and dagster.yaml has no concurrency.pools.default_limit)"
        return f"{self.limit} (not set: dagster.yaml's concurrency.pools.default_limit)"


def pools_in_force(instance: dg.DagsterInstance, computed: Mapping[str, int]) -> list[PoolInForce]:
    """Each pool of ``computed`` (pool -> limit it needs) with the limit in force."""
    infos = instance.event_log_storage.get_concurrency_infos(list(computed))
    return [
        PoolInForce(
            pool=pool,
            computed=limit,
            limit=infos[pool].limit,
            own=infos[pool].limit is not None and not infos[pool].using_default_limit,
        )
        for pool, limit in computed.items()
    ]


def set_unset_pools(instance: dg.DagsterInstance, pools: list[PoolInForce]) -> None:
    """Give every pool that is not set its computed limit. A pool set to another limit is
    left as it is (someone chose it). Each change and difference is logged as a warning: it
    is the operator's to know (a worker logs before Celery sets up its INFO logging)."""
    storage = instance.event_log_storage
    for pool in pools:
        if pool.state == "unset":
            try:
                storage.set_concurrency_slots(pool.pool, pool.computed)
            except Exception as error:  # another worker setting it at the same moment
                logger.warning("could not set pool %s to %s: %s", pool.pool, pool.computed, error)
            else:
                logger.warning(
                    "pool %s had no limit of its own (in force: %s); set it to %s from imagen.yaml",
                    pool.pool,
                    pool.in_force(),
                    pool.computed,
                )
        elif pool.state == "differs":
            logger.warning(
                "pool %s is %s; imagen.yaml needs %s (imagen config limits --apply sets it)",
                pool.pool,
                pool.in_force(),
                pool.computed,
            )


def set_pools_from_config(instance: dg.DagsterInstance) -> None:
    """Set the generate pools that are not set to what imagen.yaml needs (``imagen worker``
    at start); an imagen.yaml that does not load is logged and changes nothing."""
    try:
        computed = pool_limits(gpu_capacity(load_setup().backends))
    except ImagenError as error:
        logger.warning("pool limits not checked, imagen.yaml does not load: %s", error)
        return
    set_unset_pools(instance, pools_in_force(instance, computed))


def gpu_run_limit_in_force(instance: dg.DagsterInstance) -> int | None:
    """The run queue's limit on runs tagged ``imagen/pool: imagen_gpu`` in the instance's
    dagster.yaml; None without one (or without a run queue)."""
    queue = instance.get_concurrency_config().run_queue_config
    for entry in (queue.tag_concurrency_limits if queue is not None else None) or []:
        if entry.get("key") == TAG_POOL and entry.get("value") == GPU_POOL:
            return int(entry["limit"])
    return None

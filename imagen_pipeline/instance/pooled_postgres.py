"""Dagster's Postgres storage with connections kept open between queries.

dagster-postgres opens a new database connection for every query outside the webserver
(its engines use SQLAlchemy's ``NullPool``), so a run worker that stores about 60 events
connects about 100 times, and each new connection costs a Postgres backend start. On a
small host that is a third of the CPU a run takes (docs/benchmarks.md). This storage is the
same dagster-postgres storage with each engine switched to a small pool, through the
storages' public ``optimize_for_webserver`` hook that dagster-webserver itself uses.

Its event log storage also gives a pool its ``default_limit`` with one upsert
(:class:`PoolSafeEventLogStorage`): dagster-postgres' version failed steps with "current
transaction is aborted" when several runs met a pool without a limit at once, and whenever
``default_limit`` had changed since the pool got it.

Use it in ``dagster.yaml`` in place of ``storage: postgres:`` (scripts/dagster.postgres.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_postgres import DagsterPostgresStorage, PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config
from sqlalchemy.dialects.postgresql import insert

from imagen_pipeline.instance.dagster_internals import (
    ConcurrencyLimitsTable,
    ConfigurableClassData,
    allocate_pool_slots,
    storage_instance,
)

# dagster-webserver's defaults for the same pool.
POOL_RECYCLE_S = 3600
POOL_MAX_OVERFLOW = 20


class PoolSafeEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres' event log storage whose pools get their default limit safely.

    Before a step claims a slot of a pool that has no limit of its own, Dagster gives the
    pool ``concurrency.pools.default_limit``. dagster-postgres inserts the limit row and, when
    the insert hits an existing row, updates it in the same transaction; on Postgres the
    failed insert has already aborted that transaction, so the update fails with "current
    transaction is aborted" and so does the step. That happened to every run but one of a
    burst that met a new pool together (they wait on the first one's insert, then fail), and
    to every step of a pool on its default after ``default_limit`` changed.

    Here the row is one ``INSERT ... ON CONFLICT DO UPDATE`` that changes only a limit taken
    from the default (a limit set for the pool stays), and the slot rows follow in the same
    transaction, while the upsert holds the row's lock: one run at a time sets them.
    """

    def initialize_concurrency_limit_to_default(self, concurrency_key: str) -> bool:
        """Give ``concurrency_key`` the instance's default limit unless it has its own;
        True when a default applies (Dagster's contract)."""
        instance = storage_instance(self)
        default_limit = None if instance is None else instance.global_op_concurrency_default_limit
        if default_limit is None or not self.has_default_pool_limit_col:
            return super().initialize_concurrency_limit_to_default(concurrency_key)
        table = ConcurrencyLimitsTable
        upsert = insert(table).values(
            concurrency_key=concurrency_key, limit=default_limit, using_default_limit=True
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[table.c.concurrency_key],
            set_={"limit": default_limit},
            where=table.c.using_default_limit,
        ).returning(table.c.limit)
        with self.index_transaction() as conn:
            if conn.execute(upsert).fetchone() is not None:
                allocate_pool_slots(self, conn, concurrency_key, default_limit)
        return True


class PooledPostgresStorage(DagsterPostgresStorage):
    """dagster-postgres storage whose engines keep one connection open (plus overflow).

    Config: the fields of ``storage: postgres:`` plus ``pool_recycle_seconds`` (reconnect
    connections older than this) and ``pool_max_overflow`` (extra connections for
    concurrent queries, closed when returned). The event log storage is
    :class:`PoolSafeEventLogStorage` (dagster-postgres' constructor still builds its own,
    which is never used).
    """

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
        pool_recycle_seconds: int = POOL_RECYCLE_S,
        pool_max_overflow: int = POOL_MAX_OVERFLOW,
    ) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._pool_safe_event_log = PoolSafeEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            # statement_timeout 0 keeps Postgres' default (no timeout), as with NullPool.
            storage.optimize_for_webserver(
                statement_timeout=0,
                pool_recycle=pool_recycle_seconds,
                max_overflow=pool_max_overflow,
            )

    @property
    def event_log_storage(self) -> PoolSafeEventLogStorage:
        """The event log storage the instance uses."""
        return self._pool_safe_event_log

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """``storage: postgres:`` fields plus the pool settings."""
        return {
            **DagsterPostgresStorage.config_type(),
            "pool_recycle_seconds": dg.Field(
                dg.IntSource,
                is_required=False,
                default_value=POOL_RECYCLE_S,
                description="Reconnect pooled connections older than this many seconds.",
            ),
            "pool_max_overflow": dg.Field(
                dg.IntSource,
                is_required=False,
                default_value=POOL_MAX_OVERFLOW,
                description="Connections beyond the pooled one for concurrent queries.",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresStorage:
        """Build the storage from its ``dagster.yaml`` block."""
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
            pool_recycle_seconds=config_value["pool_recycle_seconds"],
            pool_max_overflow=config_value["pool_max_overflow"],
        )

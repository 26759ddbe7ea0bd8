"""Dagster's Postgres storage with connections kept open between queries and the schema
checked once per process.

dagster-postgres opens a new database connection for every query outside the webserver
(its engines use SQLAlchemy's ``NullPool``), so a run worker that stores about 60 events
connects about 100 times, and each new connection costs a Postgres backend start. On a
small host that is a third of the CPU a run takes (docs/benchmarks.md). This storage is the
same dagster-postgres storage with each engine switched to a small pool, through the
storages' public ``optimize_for_webserver`` hook that dagster-webserver itself uses.

dagster-postgres also asks Postgres' catalog which tables and columns exist: every storage
when it is built (a new instance per sensor tick in the code server, per run in a worker),
and on every query of runs (``get_run_records`` reflects the ``runs`` table's columns) and
every sensor tick's state. Here each such fact is asked once per process and database and
remembered once it holds (:func:`remembered`): Dagster's migrations only add tables and
columns, so a fact that held keeps holding.

Its event log storage also gives a pool its ``default_limit`` with one upsert
(:class:`PoolSafeEventLogStorage`): dagster-postgres' version failed steps with "current
transaction is aborted" when several runs met a pool without a limit at once, and whenever
``default_limit`` had changed since the pool got it.

Use it in ``dagster.yaml`` in place of ``storage: postgres:`` (scripts/dagster.postgres.yaml).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import dagster as dg
from dagster_postgres import (
    DagsterPostgresStorage,
    PostgresEventLogStorage,
    PostgresRunStorage,
    PostgresScheduleStorage,
)
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

_HELD: set[tuple[str, str]] = set()
"""(database URL, schema fact) pairs this process has seen hold."""


def remembered(postgres_url: str, fact: str, check: Callable[[], bool]) -> bool:
    """``check()`` of the database at ``postgres_url``, asked again only until it holds."""
    if (postgres_url, fact) in _HELD:
        return True
    if check():
        _HELD.add((postgres_url, fact))
        return True
    return False


class SchemaOnceRunStorage(PostgresRunStorage):
    """dagster-postgres' run storage whose column and table checks are :func:`remembered`."""

    def has_run_stats_index_cols(self) -> bool:
        """See :meth:`PostgresRunStorage.has_run_stats_index_cols` (asked by every runs query)."""
        return remembered(self.postgres_url, "runs stats columns", super().has_run_stats_index_cols)

    def has_backfill_id_column(self) -> bool:
        """See :meth:`PostgresRunStorage.has_backfill_id_column` (asked by every new run)."""
        return remembered(self.postgres_url, "runs.backfill_id", super().has_backfill_id_column)

    def has_bulk_actions_selector_cols(self) -> bool:
        """See :meth:`PostgresRunStorage.has_bulk_actions_selector_cols`."""
        return remembered(
            self.postgres_url, "bulk_actions.selector_id", super().has_bulk_actions_selector_cols
        )

    def has_bulk_action_job_name_column(self) -> bool:
        """See :meth:`PostgresRunStorage.has_bulk_action_job_name_column`."""
        return remembered(
            self.postgres_url, "bulk_actions.job_name", super().has_bulk_action_job_name_column
        )

    def has_backfill_tags_table(self) -> bool:
        """See :meth:`PostgresRunStorage.has_backfill_tags_table`."""
        return remembered(self.postgres_url, "backfill_tags", super().has_backfill_tags_table)


class SchemaOnceScheduleStorage(PostgresScheduleStorage):
    """dagster-postgres' schedule storage whose table checks are :func:`remembered` (the
    sensor daemon asks them on every tick)."""

    def has_instigators_table(self) -> bool:
        """See :meth:`PostgresScheduleStorage.has_instigators_table`."""
        return remembered(self.postgres_url, "instigators", super().has_instigators_table)

    def _has_instigators_table(self, conn: Any) -> bool:
        return remembered(
            self.postgres_url, "instigators", partial(super()._has_instigators_table, conn)
        )

    def has_secondary_index_table(self) -> bool:
        """See :meth:`PostgresScheduleStorage.has_secondary_index_table`."""
        return remembered(self.postgres_url, "secondary_indexes", super().has_secondary_index_table)


class PoolSafeEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres' event log storage whose pools get their default limit safely and
    whose table checks are :func:`remembered`.

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

    def has_table(self, table_name: str) -> bool:
        """Whether ``table_name`` exists (see :meth:`PostgresEventLogStorage.has_table`)."""
        return remembered(
            self.postgres_url, f"table {table_name}", partial(super().has_table, table_name)
        )

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
    """dagster-postgres storage whose engines keep one connection open (plus overflow) and
    whose schema checks are asked once per process.

    Config: the fields of ``storage: postgres:`` plus ``pool_recycle_seconds`` (reconnect
    connections older than this) and ``pool_max_overflow`` (extra connections for
    concurrent queries, closed when returned). The storages are
    :class:`SchemaOnceRunStorage`, :class:`PoolSafeEventLogStorage` and
    :class:`SchemaOnceScheduleStorage`; they create Dagster's tables where missing, the
    first time the process builds them for a database (dagster-postgres' constructor still
    builds its own three, which are never used and so never connect).
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
        super().__init__(postgres_url, False, inst_data, token_provider)
        self.should_autocreate_tables = should_autocreate_tables
        create = should_autocreate_tables and (postgres_url, "tables") not in _HELD
        self._runs = SchemaOnceRunStorage(postgres_url, create, token_provider=token_provider)
        self._events = PoolSafeEventLogStorage(postgres_url, create, token_provider=token_provider)
        self._schedules = SchemaOnceScheduleStorage(
            postgres_url, create, token_provider=token_provider
        )
        if create:
            _HELD.add((postgres_url, "tables"))
        for storage in (self._runs, self._events, self._schedules):
            # statement_timeout 0 keeps Postgres' default (no timeout), as with NullPool.
            storage.optimize_for_webserver(
                statement_timeout=0,
                pool_recycle=pool_recycle_seconds,
                max_overflow=pool_max_overflow,
            )

    @property
    def run_storage(self) -> SchemaOnceRunStorage:
        """The run storage the instance uses."""
        return self._runs

    @property
    def schedule_storage(self) -> SchemaOnceScheduleStorage:
        """The schedule storage the instance uses."""
        return self._schedules

    @property
    def event_log_storage(self) -> PoolSafeEventLogStorage:
        """The event log storage the instance uses."""
        return self._events

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

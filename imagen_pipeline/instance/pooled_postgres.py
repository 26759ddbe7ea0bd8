"""Dagster's Postgres storage with connections kept open between queries.

dagster-postgres opens a new database connection for every query outside the webserver
(its engines use SQLAlchemy's ``NullPool``), so a run worker that stores about 60 events
connects about 100 times, and each new connection costs a Postgres backend start. On a
small host that is a third of the CPU a run takes (docs/benchmarks.md). This storage is the
same dagster-postgres storage with each engine switched to a small pool, through the
storages' public ``optimize_for_webserver`` hook that dagster-webserver itself uses.

Use it in ``dagster.yaml`` in place of ``storage: postgres:`` (scripts/dagster.postgres.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from imagen_pipeline.instance.dagster_internals import ConfigurableClassData

# dagster-webserver's defaults for the same pool.
POOL_RECYCLE_S = 3600
POOL_MAX_OVERFLOW = 20


class PooledPostgresStorage(DagsterPostgresStorage):
    """dagster-postgres storage whose engines keep one connection open (plus overflow).

    Config: the fields of ``storage: postgres:`` plus ``pool_recycle_seconds`` (reconnect
    connections older than this) and ``pool_max_overflow`` (extra connections for
    concurrent queries, closed when returned).
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
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            # statement_timeout 0 keeps Postgres' default (no timeout), as with NullPool.
            storage.optimize_for_webserver(
                statement_timeout=0,
                pool_recycle=pool_recycle_seconds,
                max_overflow=pool_max_overflow,
            )

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

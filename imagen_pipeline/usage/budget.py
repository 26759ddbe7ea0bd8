"""The budget guard: refuse a backend call that would push today's spend over a limit.

"Today" is the current UTC day (00:00 to 24:00 UTC), whatever the machine's time zone, so
every worker and the ``imagen usage`` report agree on where a day starts. Spend is the sum of
``cost_usd`` in ``mai.imagen_usage`` (succeeded and failed calls) created today; a backend
whose price is unknown cannot be called while a limit applies to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from imagen_pipeline.backends.pricing import Price
from imagen_pipeline.cloud.errors import database_errors
from imagen_pipeline.config.models import BudgetConfig
from imagen_pipeline.db.connection import DATABASE_URL_ENV
from imagen_pipeline.errors import ConfigError, ImagenError


class BudgetUncheckableError(ConfigError):
    """A limit applies but the call cannot be priced, so it is not made."""


class BudgetExceededError(ImagenError):
    """The call would push today's spend over a configured daily budget (not retried)."""

    public_summary = (
        "today's image budget for this backend is used up; retry the job tomorrow (UTC)"
    )


@dataclass(frozen=True)
class BudgetLimit:
    """One daily limit: for one backend instance, or (``instance`` None) for all of them."""

    label: str
    daily_usd: float
    instance: str | None


def limits_for(budget: BudgetConfig, instance: str) -> list[BudgetLimit]:
    """The limits that apply to a call of ``instance``: its own, then the global one."""
    limits = []
    own = budget.backends.get(instance)
    if own is not None:
        limits.append(BudgetLimit(f"budget.backends.{instance}.daily_usd", own.daily_usd, instance))
    if budget.daily_usd is not None:
        limits.append(BudgetLimit("budget.daily_usd", budget.daily_usd, None))
    return limits


def utc_day(now: datetime) -> tuple[datetime, datetime]:
    """Start and end of the UTC day containing ``now``."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def spend_between(
    conn: psycopg.Connection, start: datetime, end: datetime, instance: str | None
) -> float:
    """Recorded spend in ``[start, end)``, for one instance or (None) for all."""
    row = conn.execute(
        """
        SELECT coalesce(sum(cost_usd), 0) FROM mai.imagen_usage
         WHERE created_at >= %(start)s AND created_at < %(end)s
           AND (%(instance)s::text IS NULL OR backend_instance = %(instance)s)
        """,
        {"start": start, "end": end, "instance": instance},
    ).fetchone()
    conn.commit()
    return float(row[0]) if row else 0.0


def check_budget(
    budget: BudgetConfig,
    instance: str,
    estimate: Price,
    connect: Callable[[], psycopg.Connection] | None,
    now: datetime | None = None,
) -> str | None:
    """Raise :class:`BudgetExceededError` if today's spend plus ``estimate_usd`` would exceed a
    limit for ``instance``; returns a note for the log, or None when no limit applies.

    ``connect`` is None when no database is configured, and ``estimate.usd`` None when the
    backend's price is unknown: a set budget then cannot be checked, which is an error rather
    than a silent pass.
    """
    limits = limits_for(budget, instance)
    if not limits:
        return None
    if estimate.usd is None:
        raise BudgetUncheckableError(
            f"{limits[0].label} is set but the price of backend {instance!r} is unknown "
            f"({estimate.note}), so the budget cannot be checked; backend {instance!r} was "
            "not called"
        )
    estimate_usd = estimate.usd
    if connect is None:
        raise ConfigError(
            f"{limits[0].label} is set but {DATABASE_URL_ENV} is not: today's spend is "
            "unknown, so the budget cannot be checked"
        )
    start, end = utc_day(now or datetime.now(UTC))
    notes = []
    with database_errors("checking the budget"), connect() as conn:
        for limit in limits:
            spent = spend_between(conn, start, end, limit.instance)
            scope = f"on {instance!r}" if limit.instance else "on all backends"
            if spent + estimate_usd > limit.daily_usd:
                raise BudgetExceededError(
                    f"{limit.label} = ${limit.daily_usd:.2f} per UTC day would be exceeded: "
                    f"today's spend ({start:%Y-%m-%d} UTC) {scope} is ${spent:.4f} and this "
                    f"image is estimated at ${estimate_usd:.4f}; backend {instance!r} was not "
                    "called"
                )
            notes.append(f"{limit.label}: ${spent:.4f} of ${limit.daily_usd:.2f} spent {scope}")
    return f"budget ok ({start:%Y-%m-%d} UTC): " + "; ".join(notes)

"""Spend and counts from ``mai.imagen_usage``, grouped for ``imagen usage``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Literal

import psycopg

GroupBy = Literal["backend", "model", "owner"]
GROUP_COLUMNS: dict[GroupBy, str] = {
    "backend": "backend_instance",
    "model": "model",
    "owner": "coalesce(owner_user_id::text, '(none)')",
}


@dataclass(frozen=True)
class UsageLine:
    """Spend and call counts of one group (or the total)."""

    key: str
    succeeded: int
    failed: int
    cost_usd: float
    """Sum of the known costs."""
    unpriced: int = 0
    """Images whose cost is unknown (no price for their model), not in ``cost_usd``."""


def usage_lines(conn: psycopg.Connection, since: date, by: GroupBy) -> list[UsageLine]:
    """One line per group with calls created on or after the UTC day ``since``, by spend."""
    column = GROUP_COLUMNS[by]
    rows = conn.execute(
        f"""
        SELECT {column} AS key,
               count(*) FILTER (WHERE status = 'succeeded'),
               count(*) FILTER (WHERE status = 'failed'),
               coalesce(sum(cost_usd), 0),
               count(*) FILTER (WHERE status = 'succeeded' AND cost_usd IS NULL)
          FROM mai.imagen_usage
         WHERE created_at >= %(since)s
         GROUP BY 1
         ORDER BY 4 DESC, 1
        """,
        {"since": datetime.combine(since, time(), tzinfo=UTC)},
    ).fetchall()
    conn.commit()
    return [
        UsageLine(str(key), int(ok), int(bad), float(cost), int(unpriced))
        for key, ok, bad, cost, unpriced in rows
    ]


def format_report(lines: list[UsageLine], since: date, by: GroupBy) -> str:
    """A plain-text table with a total line."""
    header = f"spend since {since.isoformat()} (UTC), by {by}"
    if not lines:
        return f"{header}\nno generations recorded"
    total = UsageLine(
        "total",
        sum(line.succeeded for line in lines),
        sum(line.failed for line in lines),
        sum(line.cost_usd for line in lines),
        sum(line.unpriced for line in lines),
    )
    table = [(by, "images", "failed", "cost_usd", "unpriced")] + [
        (
            line.key,
            str(line.succeeded),
            str(line.failed),
            f"{line.cost_usd:.4f}",
            str(line.unpriced),
        )
        for line in [*lines, total]
    ]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    rendered = [
        "  ".join(
            [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 5)]
        ).rstrip()
        for row in table
    ]
    return "\n".join([header, *rendered])

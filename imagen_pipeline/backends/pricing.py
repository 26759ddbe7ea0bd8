"""What one image cost and where that price came from, for every adapter.

A price is ``config`` (a table in ``imagen.yaml``), ``built_in`` (the adapter's own table, with
the page and date it was read from), ``free`` (a backend that bills nothing) or ``unknown``
(no price anywhere: the cost is recorded as NULL rather than guessed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PriceSource = Literal["config", "built_in", "free", "unknown"]


@dataclass(frozen=True)
class Price:
    """US dollars for one image (None when unknown) and where the figure came from."""

    usd: float | None
    source: PriceSource
    note: str
    """For people: which table, read when, or what to set to make the price known."""


FREE = Price(usd=0.0, source="free", note="this backend bills nothing")


def describe_cost(usd: float | None) -> str:
    """``$0.0400``, or ``cost unknown`` when no price is known."""
    return "cost unknown" if usd is None else f"${usd:.4f}"

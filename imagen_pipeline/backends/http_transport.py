"""What the HTTP adapters share about talking to a server: who they say they are, which
transport errors may hide a request that arrived, and how long a server asks them to wait."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

USER_AGENT = "imagen-pipeline"

LOST_RESPONSE_ERRORS = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
"""Transport errors after which the request may have reached the server (only the answer
was lost), so a create or submit must not simply be sent again."""


def retry_after_header_s(value: str) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay seconds or an HTTP date), else None."""
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

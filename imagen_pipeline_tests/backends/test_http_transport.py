"""Retry-After parsing shared by the HTTP adapters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from imagen_pipeline.backends.http_transport import retry_after_header_s


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 1.5 ", 1.5), ("-3", 0.0), ("", None), ("soon", None)],
)
def test_delay_seconds_and_unusable_values(value: str, expected: float | None) -> None:
    assert retry_after_header_s(value) == expected


def test_http_dates_count_from_now_and_never_go_negative() -> None:
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    waited = retry_after_header_s(ahead)
    assert waited is not None and 80 < waited <= 90
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert retry_after_header_s(past) == 0.0

"""Ages written as a number and a unit (``30d``, ``12h``, ``90m``, ``0s``), as ``imagen.yaml``'s
``retention:`` block and ``imagen housekeeping --older-than`` take them."""

from __future__ import annotations

import re
from datetime import timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
"""Unit letter -> seconds."""
_AGE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_age(text: str, field: str) -> timedelta:
    """``text`` as a duration; a ``ValueError`` naming ``field`` and the allowed form."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(
            f"{field}: {text!r} is not an age; write a whole number and one of the units "
            "s, m, h, d (for example 30d, 12h, 0s)"
        )
    return timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])

"""Times as LMS exports and instructors write them, parsed in one place."""

from __future__ import annotations

import re
from datetime import datetime

# Gradescope writes nanoseconds ("20:28:38.073862000 -07:00"); Python keeps microseconds.
_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})\.(\d{1,6})\d*")
_SPACED_OFFSET = re.compile(r"\s+([+-]\d{2}:?\d{2})$")


def parse_iso(text: str) -> datetime:
    """ISO 8601 with a space or T, fractional seconds of any length, an offset (also after a space) or Z.
    ValueError names the text when it is not a time."""
    cleaned = _SPACED_OFFSET.sub(r"\1", _FRACTION.sub(r"\1.\2", text.strip()))
    try:
        return datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None

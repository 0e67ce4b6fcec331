"""Text from a submission or a worker, made safe to write anywhere (JSON, UTF-8 files, terminals)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

# A notebook's JSON may hold half a surrogate pair ("\ud83d", half an emoji): valid JSON, but no
# UTF-8 encoder accepts it. Any surrogate left in a Python str is such a lone half.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_text(text: str) -> str:
    """TEXT with every lone surrogate replaced by U+FFFD."""
    return LONE_SURROGATE.sub("\ufffd", text)


def safe_data(value: Any) -> Any:
    """VALUE (strings, lists, dicts and pydantic models, nested) with every string made safe."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, BaseModel):
        return safe_data(value.model_dump())
    if isinstance(value, (list, tuple)):
        return [safe_data(v) for v in value]
    if isinstance(value, dict):
        return {safe_data(k): safe_data(v) for k, v in value.items()}
    return value

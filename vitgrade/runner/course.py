"""Course policy: the course's penalties as explicit, itemized adjustments to a report.

Configured in a suite's [course] table (defaults are the course's stated policy): 10% for wrong
file names or extra files in the zip, 10% per late day for at most 4 days (later is not
accepted), 20% when the code cannot be executed. Penalties are fractions of the test score.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from ..report.models import Adjustment
from ..submission import ALLOWED_ZIP_FILES, Extracted
from ..times import parse_iso

DEFAULTS = {
    "wrong_files_penalty": 0.10,
    "late_penalty_per_day": 0.10,
    "max_late_days": 4,
    "not_executable_penalty": 0.20,
}


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_iso(str(value))


def adjustments(
    extracted: Extracted, config: dict[str, Any], submitted_at: datetime | None, due: datetime | None
) -> list[Adjustment]:
    """The penalties that apply to this submission, each with its reason."""
    policy = {**DEFAULTS, **config}
    out: list[Adjustment] = []
    if extracted.kind == "zip":
        names = {name.rsplit("/", 1)[-1] for name in extracted.zip_names}
        wrong = sorted(names - ALLOWED_ZIP_FILES - {"best_model.pth"})
        missing = sorted(ALLOWED_ZIP_FILES - names)
        if wrong or missing:
            detail = "; ".join(filter(None, [f"extra or misnamed: {', '.join(wrong)}" if wrong else "",
                                             f"missing: {', '.join(missing)}" if missing else ""]))  # fmt: skip
            out.append(Adjustment(reason=f"wrong file names or extra files in the zip ({detail})", fraction=policy["wrong_files_penalty"]))
    if submitted_at is not None and due is not None and submitted_at > due:
        days = math.ceil((submitted_at - due).total_seconds() / 86400)
        if days > int(policy["max_late_days"]):
            out.append(Adjustment(reason=f"{days} days late: not accepted after {policy['max_late_days']} days", fraction=1.0))
        else:
            out.append(Adjustment(reason=f"{days} day(s) late", fraction=round(days * policy["late_penalty_per_day"], 4)))
    broken = [d for d in extracted.diagnostics if "does not parse" in d.reason]
    if broken:
        where = ", ".join(d.where for d in broken)
        out.append(Adjustment(reason=f"the code cannot be executed as handed in ({where} does not parse)", fraction=policy["not_executable_penalty"]))
    return out


def apply(tests_score: float, items: list[Adjustment]) -> tuple[float, list[Adjustment]]:
    """The final score and the adjustments with their points filled in; never below 0."""
    total = min(1.0, sum(a.fraction for a in items))
    filled = [a.model_copy(update={"points": round(-tests_score * a.fraction, 4)}) for a in items]
    return round(max(0.0, tests_score * (1 - total)), 4), filled

"""What a caller may see of a report, decided when it is read: Gradescope's four levels per test
(`visible`, `after_due_date`, `after_published`, `hidden`). Staff see everything; a student sees
the tests their level allows now, so hidden results appear after the due date without a regrade."""

from __future__ import annotations

from datetime import datetime

from .auth import Caller
from .db import Assignment

# What the code printed during withheld tests would show their inputs: shown with them.
WITHHELD_OUTPUT = {"text": "", "total_bytes": 0, "truncated": True}


def shown(visibility: str, assignment: Assignment, at: datetime) -> bool:
    if visibility == "visible":
        return True
    if visibility == "after_due_date":
        return assignment.due is not None and at >= assignment.due
    if visibility == "after_published":
        return assignment.published
    return False


def for_caller(report: dict, caller: Caller, assignment: Assignment, at: datetime) -> dict:
    """REPORT as CALLER may see it at AT. While tests are withheld, the score is the shown tests'
    sum and `withheld` counts the others, so no total gives a hidden result away, and what the
    code printed is held back with them; a picture shows when the test that recorded it does. A
    student never sees the grade's seed."""
    if caller.staff:
        return {**report, "withheld": 0}
    report = {k: v for k, v in report.items() if k != "seed"}  # the seed of hidden inputs is the grader's
    tests = [t for t in report["tests"] if shown(t["visibility"], assignment, at)]
    withheld = len(report["tests"]) - len(tests)
    if not withheld:
        return {**report, "withheld": 0}
    names = {t["name"] for t in tests}
    figures = {name: figure for name, figure in (report.get("figures") or {}).items() if figure and figure["test"] in names}
    return {**report, "tests": tests, "withheld": withheld, "figures": figures, "score": round(sum(t["score"] for t in tests), 4),
            "max_score": round(sum(t["max_score"] for t in tests), 4), "tests_score": round(sum(t["score"] for t in tests), 4),
            "adjustments": [], "programs": [], "student_output": WITHHELD_OUTPUT}  # fmt: skip

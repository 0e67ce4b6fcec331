"""Dependencies between cases, as in check50: a property that zeros, identities or constants
also have (shapes, rows that sum to one, determinism) counts only once the unit's anchor, a case
that reproduces the reference, has passed. Such a case still reports what it found, so the student
knows what to fix, but it earns its points only with a working unit."""

from __future__ import annotations

from dataclasses import dataclass

from ..report.models import TestResult


@dataclass(frozen=True)
class Dependency:
    """What the plugin read from one case's @case(...) declaration."""

    anchor: bool
    requires: tuple[str, ...] | None  # None: its own unit's anchors, where the suite has any


def apply_dependencies(results: list[TestResult], deps: list[Dependency]) -> list[TestResult]:
    """Zero the points of passed cases whose required anchors did not pass, saying why."""
    anchors: dict[str, list[TestResult]] = {}
    for result, dep in zip(results, deps, strict=True):
        if dep.anchor:
            anchors.setdefault(result.unit, []).append(result)
    adjusted = []
    for result, dep in zip(results, deps, strict=True):
        needed = dep.requires if dep.requires is not None else ((result.unit,) if result.unit in anchors else ())
        missing = [unit for unit in needed if not dep.anchor or unit != result.unit]
        missing = [unit for unit in missing if not any(a.status == "passed" for a in anchors.get(unit, []))]
        if missing and result.score > 0:
            names = "; ".join(f"{u}: {' / '.join(a.name for a in anchors.get(u, [])) or 'its reference check'}" for u in missing)
            note = (
                "passed, but not counted: code that does not work can pass this check too, so it counts once "
                f"the reference check of {', '.join(missing)} passes ({names})"
            )
            result = result.model_copy(update={"score": 0.0, "output": f"{note}. {result.output}".strip(". ")})
        adjusted.append(result)
    return adjusted

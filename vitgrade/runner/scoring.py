"""Dependencies between cases, as in check50: a property that zeros, identities or constants
also have (shapes, rows that sum to one, determinism) counts only once the unit's anchor, a case
that reproduces the reference, has passed. Such a case still reports what it found, so the student
knows what to fix, but it earns its points only with a working unit.

The other way round, a bug costs points where it lives: when a block's or a ViT's own anchor
(the unit computed from the student's own parts) passes, but a part it is built of fails its
anchor, the whole's failed properties are that part's failures and cost nothing in the whole."""

from __future__ import annotations

from dataclasses import dataclass

from ..contract import PARTS
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
    return [excused(r, d, anchors) for r, d in zip(adjusted, deps, strict=True)]


def excused(result: TestResult, dep: Dependency, anchors: dict[str, list[TestResult]]) -> TestResult:
    """A failed property of a whole whose own anchor passed, while a part's anchor did not: the
    points stay, and the message says which part to fix."""
    def works(unit: str) -> bool:
        return bool(anchors.get(unit)) and all(a.status == "passed" for a in anchors[unit])

    broken = [part for part in PARTS.get(result.unit, ()) if anchors.get(part) and not works(part)]
    if dep.anchor or result.status not in ("failed", "error") or not works(result.unit) or not broken:
        return result
    note = (f"not counted against {result.unit}: its own reference check passes, and this fails because your "
            f"{' and '.join(broken)} fails its reference check (fix it there)")  # fmt: skip
    return result.model_copy(update={"score": result.max_score, "output": f"{note}. {result.output}".strip(". ")})

"""How a test author declares a test case: `@case(unit=..., points=...)` on a plain function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pytest

from ..contract import CONTRACT_UNITS, UNITS

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")  # Gradescope's four levels
Visibility = Literal["hidden", "after_due_date", "after_published", "visible"]


def case(
    unit: str,
    points: float | Mapping[str, float],
    *,
    name: str | None = None,
    visibility: Visibility = "visible",
    timeout: float = 20.0,
    from_scratch: bool = True,
    anchor: bool = False,
    requires: tuple[str, ...] | None = None,
) -> pytest.MarkDecorator:
    """Mark a test function as a graded case. `name` defaults to the docstring's first line.

points: a number for every contract that has the unit (vitgrade.contract), or points per
contract, e.g. {"edition": 1, "course": 2}; the case runs only under the contracts it names.

    from_scratch: the points are withheld, under the default policy, when the case's unit uses
    an API the homework forbids (see vitgrade.runner.policy).
    anchor: the case reproduces the reference (values, transplanted weights, or the unit computed
    from the student's own parts); zeros, identities and constants cannot pass it.
    requires: units whose anchors must pass for this case to count (default: its own unit's, where
    the suite has any). A property that degenerate code also has earns nothing on its own
    (see vitgrade.runner.scoring)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {VISIBILITIES}, not {visibility!r}")
    per_contract = contract_points(unit, points)
    if min(per_contract.values(), default=0) < 0 or timeout <= 0:
        raise ValueError("points must be >= 0 and timeout > 0")
    unknown = set(requires or ()) - set(UNITS)
    if unknown:
        raise ValueError(f"requires names units that do not exist: {sorted(unknown)}")
    return pytest.mark.vitgrade(
        unit=unit,
        points=per_contract,
        name=name,
        visibility=visibility,
        timeout=float(timeout),
        from_scratch=from_scratch,
        anchor=anchor,
        requires=tuple(requires) if requires is not None else None,
    )


def contract_points(unit: str, points: float | Mapping[str, float]) -> dict[str, float]:
    """{contract: points} for a case of `unit`; a contract that lacks the unit cannot grade it."""
    if not isinstance(points, Mapping):
        return {c: float(points) for c, units in CONTRACT_UNITS.items() if unit in units}
    wrong = [c for c in points if unit not in CONTRACT_UNITS.get(c, ())]  # type: ignore[call-overload]
    if wrong:
        raise ValueError(f"a {unit} case cannot count under {wrong}: contracts and their units are {CONTRACT_UNITS}")
    return {str(c): float(p) for c, p in points.items()}

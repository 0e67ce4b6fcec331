"""How a test author declares a test case: `@case(unit=..., points=...)` on a plain function."""

from __future__ import annotations

from typing import Literal

import pytest

UNITS = ("sdpa", "mask", "patch", "mhsa", "block", "vit", "train", "policy")
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")  # Gradescope's four levels
Visibility = Literal["hidden", "after_due_date", "after_published", "visible"]


def case(
    unit: str,
    points: float,
    *,
    name: str | None = None,
    visibility: Visibility = "visible",
    timeout: float = 20.0,
    from_scratch: bool = True,
) -> pytest.MarkDecorator:
    """Mark a test function as a graded case. `name` defaults to the docstring's first line.

    from_scratch: the points are withheld, under the default policy, when the case's unit uses
    an API the homework forbids (see vitgrade.runner.policy)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {VISIBILITIES}, not {visibility!r}")
    if points < 0 or timeout <= 0:
        raise ValueError("points must be >= 0 and timeout > 0")
    return pytest.mark.vitgrade(
        unit=unit, points=float(points), name=name, visibility=visibility, timeout=float(timeout), from_scratch=from_scratch
    )

"""vitgrade: an autograder for the Vision Transformer homework (HW4, NYU Deep Learning).

    import vitgrade
    report = vitgrade.grade("ab1234.zip", vitgrade.GradeOptions(suite="full"))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)
__all__ = ["GradeOptions", "__version__", "check_notebook", "grade"]


def __getattr__(name: str) -> Any:
    """`vitgrade.grade`, `vitgrade.GradeOptions` and `vitgrade.check_notebook` without importing the engine at `import vitgrade`
    (the worker imports this package too, and must stay light)."""
    if name in {"grade", "GradeOptions"}:
        from . import api

        return getattr(api, name)
    if name == "check_notebook":
        from .selfcheck import check_notebook

        return check_notebook
    raise AttributeError(f"module 'vitgrade' has no attribute {name!r}")

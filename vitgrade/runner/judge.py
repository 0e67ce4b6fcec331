"""Verdicts computed on the trusted side, with messages in the spirit of torch.testing.assert_close:
what was fed in, what was expected, what came out, and where they differ and by how much.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import torch


class GradingFailure(AssertionError):
    """A wrong result. Its message is shown to the student as it is."""


# What the running case reported with inform(): a list the plugin sets per case and collects.
NOTES: ContextVar[list[str]] = ContextVar("vitgrade_case_notes")


def inform(message: str) -> None:
    """Attach an informational message to the running case (shown even when it passes)."""
    NOTES.get([]).append(message)


def describe(**inputs: Any) -> str:
    """'q (2, 5, 8) float32, mask (5, 7) bool' — the inputs of a call, for messages."""
    parts = []
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            parts.append(f"{name} {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}")
        elif value is not None:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise GradingFailure(message)


def expect_tensor(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise GradingFailure(f"{what} should be a tensor; yours is {kind_of(value)}")
    return value


def expect_tensors(value: Any, count: int, what: str) -> list[torch.Tensor]:
    """A tuple of `count` tensors, e.g. (output, attention)."""
    if not isinstance(value, list) or len(value) != count or not all(isinstance(v, torch.Tensor) for v in value):
        raise GradingFailure(f"{what} should return a tuple of {count} tensors; yours returned {kind_of(value)}")
    return value


def kind_of(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, list):
        return f"a sequence of {len(value)} ({', '.join(kind_of(v) for v in value[:4])})"
    return "None" if value is None else f"a {type(value).__name__}"


def expect_shape(
    tensor: Any, shape: tuple[int, ...], what: str, fed: str = "", causes: dict[tuple[int, ...], str] | None = None
) -> torch.Tensor:
    """CAUSES: wrong shapes whose usual cause is known, and that cause."""
    tensor = expect_tensor(tensor, what)
    if tuple(tensor.shape) != tuple(shape):
        where = f" for inputs {fed}" if fed else ""
        cause = (causes or {}).get(tuple(tensor.shape))
        raise GradingFailure(f"{what} should have shape {tuple(shape)}{where}; yours has {tuple(tensor.shape)}"
                             + (f": {cause}" if cause else ""))  # fmt: skip
    return tensor


def expect_close(
    actual: Any,
    expected: torch.Tensor,
    what: str,
    fed: str = "",
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Equal within tolerance, else a message with the worst element, its index and the count off."""
    actual = expect_shape(actual, tuple(expected.shape), what, fed)
    if actual.dtype != expected.dtype:
        raise GradingFailure(f"{what} should have dtype {expected.dtype}; yours has {actual.dtype}")
    a, e = actual.double(), expected.double()
    bad_value = ~torch.isfinite(a) & torch.isfinite(e)
    error = (a - e).abs()
    error = torch.where(torch.isnan(error), torch.full_like(error, float("inf")), error)
    off = (error > atol + rtol * e.abs()) | bad_value
    if not bool(off.any()):
        return
    flat = int(torch.argmax(error).item())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), e.shape)) if e.dim() else ()
    where = f" for inputs {fed}" if fed else ""
    raise GradingFailure(
        f"{what} differs from the expected value{where}: {int(off.sum())} of {off.numel()} elements are off; "
        f"the largest absolute error is {float(error.flatten()[flat]):.3g} at index {index} "
        f"(expected {float(e.flatten()[flat]):.6g}, got {float(a.flatten()[flat]):.6g}; "
        f"tolerance atol={atol:g}, rtol={rtol:g})"
    )

"""Pictures for the feedback page, recorded by test cases through the `figures` fixture: what the
student's attention looks like beside the reference's on one input, and the loss curve of the
grader's training run of their model beside the reference's band. Only the runner's own values
go in (programs it ran), rounded and thinned so the report stays small."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..report.models import AttentionMap, Figures, TrainingCurve

MAX_POINTS = 100  # a training curve is averaged down to at most this many points


def thin(values: Sequence[float], points: int = MAX_POINTS) -> list[float]:
    """VALUES averaged over equal windows, so that at most POINTS remain."""
    window = max(1, -(-len(values) // points))
    return [round(sum(values[i : i + window]) / len(values[i : i + window]), 4) for i in range(0, len(values), window)]


class FigureBook:
    """Records into one grade's FIGURES (its Judging's) for the test named TEST; each figure once:
    the first record stands."""

    def __init__(self, figures: Figures, test: str) -> None:
        self.figures, self.test = figures, test

    def attention(self, student: torch.Tensor, reference: torch.Tensor, caption: str) -> None:
        """Two (queries, keys) maps: the student's attention weights and the reference's, on the same input."""
        if self.figures.attention is None and student.dim() == 2 and torch.isfinite(student).all():
            rows = lambda t: [[round(float(x), 4) for x in row] for row in t.detach().float()]  # noqa: E731
            self.figures.attention = AttentionMap(test=self.test, caption=caption, student=rows(student), reference=rows(reference))

    def training(self, losses: torch.Tensor, band: dict[str, list[float]], caption: str) -> None:
        """The student's loss per step, thinned to the band's resolution (BAND: low/high per window of `every` steps)."""
        if self.figures.training is None and losses.dim() == 1 and torch.isfinite(losses).all():
            curve = thin([float(x) for x in losses], len(band["low"]))
            self.figures.training = TrainingCurve(test=self.test, caption=caption, student=curve, low=band["low"], high=band["high"])

"""`vitgrade calibrate`: the reference's accuracy distribution under the training check.

It runs what the hidden suite's training case runs (vitgrade.training on the synthetic task, with
the suite's [train] settings), on many seeds, in parallel processes, and estimates how often the
reference itself would fall below each threshold. The reference starts from its own init, which
follows the laws the case draws a student's start by (reference_initialization; the tests check
they agree), so recorded runs stay reproducible from their seeds. The range of its loss curves
is the band the feedback page draws a student's curve against (`loss_band`).

A grade repeats a run that misses full credit on fresh hidden seeds ([train] attempts), so a
correct ViT fails a threshold only when every run misses it: with independent runs, the bound on
one run's fail rate raised to the number of runs bounds a grade's.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..training import predict, train
from .figures import thin
from .plugin import load_module
from .tasks import training_check_data


@dataclass
class Calibration:
    accuracies: list[float]
    thresholds: dict[str, float]
    curves: list[list[float]] = field(default_factory=list)  # each run's loss curve, thinned alike
    attempts: int = 1  # runs a grade makes while below full credit ([train] attempts)

    def summary(self) -> dict[str, Any]:
        mean, sd = statistics.mean(self.accuracies), statistics.pstdev(self.accuracies)
        out: dict[str, Any] = {
            "seeds": len(self.accuracies),
            "mean": round(mean, 4),
            "stdev": round(sd, 4),
            "min": min(self.accuracies),
            "max": max(self.accuracies),
            "attempts": self.attempts,
        }
        # The error rate (1 - accuracy) is bounded and skewed: most runs are perfect and a few
        # converge slowly, so a normal fit of the accuracy is far too optimistic. The estimate to
        # trust models only the tail: exceedances of the error over its 90th percentile, fitted
        # with an exponential (peaks over threshold).
        errors = sorted(1 - a for a in self.accuracies)
        u = errors[int(0.9 * (len(errors) - 1))]
        excess = [e - u for e in errors if e > u]
        p_u, beta = len(excess) / len(errors), max(statistics.mean(excess) if excess else 0.0, 1e-3)
        out["tail_model"] = {"error_threshold": round(u, 4), "exceedances": len(excess), "mean_excess": round(beta, 4)}
        out["threshold_for_1_in_1000"] = round(1 - (u + beta * math.log(max(p_u, 1e-9) * 1000)), 4)
        if self.curves:  # the band the training figure draws the student's curve against
            out["loss_band"] = {"runs": len(self.curves), "low": [round(min(c), 4) for c in zip(*self.curves)],
                                "high": [round(max(c), 4) for c in zip(*self.curves)]}  # fmt: skip
        for name, threshold in self.thresholds.items():
            below = sum(a < threshold for a in self.accuracies)
            z = (mean - threshold) / max(sd, 1e-3)
            tail = p_u * math.exp(-max(0.0, (1 - threshold) - u) / beta)
            upper = binomial_upper(below, len(self.accuracies), 0.05)
            out[name] = {
                "threshold": threshold,
                "observed_fails": below,
                "fail_rate_upper_95": round(upper, 6),
                "grade_fail_rate_upper_95": float(f"{upper**self.attempts:.3g}"),  # every one of its runs missing
                "tail_fit_fail_rate": float(tail),
                "normal_fit_fail_rate": float(0.5 * math.erfc(z / math.sqrt(2))),
            }
        return out


def binomial_upper(fails: int, runs: int, alpha: float) -> float:
    """The exact (Clopper-Pearson) one-sided upper confidence bound on a failure rate: the largest p
    under which seeing at most `fails` in `runs` still has probability alpha. No model of the tail:
    with 0 fails it is 1 - alpha^(1/runs), so proving 1 in 1000 this way takes about 3000 runs."""

    def at_most(p: float) -> float:
        return sum(math.comb(runs, k) * p**k * (1 - p) ** (runs - k) for k in range(fails + 1))

    low, high = fails / runs, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if at_most(mid) > alpha else (low, mid)
    return high


def one_run(reference: str, settings: dict[str, Any], seed: int) -> tuple[float, list[float]]:
    """One training check of the reference, as the hidden case does it for a student: its
    held-out accuracy and its loss curve (thinned)."""
    torch.set_num_threads(1)
    module = load_module("vitgrade_reference", Path(reference))
    torch.manual_seed(seed)
    accuracy, losses = training_check(module.VisionTransformer(*settings["model"]), settings, seed)
    return accuracy, thin(losses.tolist())


def training_check(model: torch.nn.Module, settings: dict[str, Any], seed: int) -> tuple[float, torch.Tensor]:
    """Train MODEL with the grader's loop on the task of SEED; its accuracy on held-out images and its loss per step."""
    images, labels, held_out, truth = training_check_data(settings, seed)
    losses = train(model, images, labels, int(settings["steps"]), int(settings["batch_size"]), float(settings["lr"]),
                   float(settings["weight_decay"]), seed)["losses"]  # fmt: skip
    return float((predict(model, held_out, 256) == truth).float().mean()), losses


def held_out_accuracy(model: torch.nn.Module, settings: dict[str, Any], seed: int) -> float:
    return training_check(model, settings, seed)[0]


class Recorded(BaseModel):
    """What growing a calibration file needs from it; the summary fields are recomputed, not read."""

    model_config = ConfigDict(extra="ignore")
    first_seed: int = 1000
    accuracies: list[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=1)
    loss_band: dict[str, Any] | None = None


def extended(recorded: Recorded, more: Calibration) -> dict[str, Any]:
    """A calibration file grown by runs on the seeds that follow the ones it holds: the summary over
    all of its accuracies, its loss band kept. Proving a small fail rate takes thousands of runs
    (binomial_upper), so a calibration grows over several sittings."""
    grown = Calibration(recorded.accuracies + more.accuracies, more.thresholds, attempts=more.attempts)
    return {**grown.summary(), "first_seed": recorded.first_seed, "loss_band": recorded.loss_band, "accuracies": grown.accuracies}


def calibrate(reference: Path, settings: dict[str, Any], seeds: list[int], jobs: int) -> Calibration:
    with ProcessPoolExecutor(jobs) as pool:
        runs = list(pool.map(one_run, [str(reference)] * len(seeds), [settings] * len(seeds), seeds))
    thresholds: dict[str, float] = {k: float(settings[k]) for k in ("half_credit", "full_credit") if k in settings}
    return Calibration([accuracy for accuracy, _ in runs], thresholds, [curve for _, curve in runs], int(settings["attempts"]))

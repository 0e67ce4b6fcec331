"""`vitgrade calibrate`: the reference's accuracy distribution under the training check.

It runs exactly what the hidden suite's training case runs (grader.training on the synthetic
task, with the suite's [train] settings), on many seeds, in parallel processes, and estimates
how often the reference itself would fall below each threshold.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..training import predict, train
from .plugin import load_reference
from .tasks import arrangement_task


@dataclass
class Calibration:
    accuracies: list[float]
    thresholds: dict[str, float]

    def summary(self) -> dict[str, Any]:
        mean, sd = statistics.mean(self.accuracies), statistics.pstdev(self.accuracies)
        out: dict[str, Any] = {
            "seeds": len(self.accuracies),
            "mean": round(mean, 4),
            "stdev": round(sd, 4),
            "min": min(self.accuracies),
            "max": max(self.accuracies),
        }
        # The error rate (1 - accuracy) is bounded and skewed: most runs are perfect, a few are slow
        # to converge. An exponential fit of the error has a much heavier tail than a normal fit of
        # the accuracy, so it is the estimate to trust; both are printed.
        mean_error = max(1e-4, 1 - mean)
        for name, threshold in self.thresholds.items():
            below = sum(a < threshold for a in self.accuracies)
            z = (mean - threshold) / max(sd, 1e-3)
            out[name] = {
                "threshold": threshold,
                "observed_fails": below,
                "normal_fit_fail_rate": float(0.5 * math.erfc(z / math.sqrt(2))),
                "exponential_tail_fail_rate": float(math.exp(-(1 - threshold) / mean_error)),
                "threshold_for_1_in_1000_exponential": round(1 - mean_error * math.log(1000), 4),
            }
        return out


def one_run(reference: str, settings: dict[str, Any], seed: int) -> float:
    """One training check of the reference, as the hidden case does it for a student."""
    torch.set_num_threads(1)
    module = load_reference(Path(reference))
    images, labels = arrangement_task(int(settings["train_images"]), seed=seed)
    held_out, truth = arrangement_task(int(settings["held_out_images"]), seed=seed + 1)
    torch.manual_seed(seed)
    model = module.VisionTransformer(*settings["model"])
    train(model, images, labels, int(settings["steps"]), int(settings["batch_size"]), float(settings["lr"]),
          float(settings["weight_decay"]), seed)  # fmt: skip
    return float((predict(model, held_out, 256) == truth).float().mean())


def calibrate(reference: Path, settings: dict[str, Any], seeds: list[int], jobs: int) -> Calibration:
    with ProcessPoolExecutor(jobs) as pool:
        accuracies = list(pool.map(one_run, [str(reference)] * len(seeds), [settings] * len(seeds), seeds))
    thresholds = {k: float(settings[k]) for k in ("half_credit", "full_credit") if k in settings}
    return Calibration(accuracies, thresholds)

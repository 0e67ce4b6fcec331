"""The calibration's confidence bound (exact Clopper-Pearson, with no model of the tail), and the
training task's two sides: the reference learns it, models without attention and detectors do not."""

from __future__ import annotations

import math
import tomllib

import pytest

from tests.conftest import ROOT
from tests.corpus.degenerate import DETECTOR_VIT, LINEAR_VIT, MEAN_POOLED_VIT
from vitgrade.runner.calibrate import Calibration, binomial_upper, held_out_accuracy


@pytest.mark.parametrize("runs", [200, 3000])
def test_no_fails_bound_is_the_closed_form(runs: int) -> None:
    assert binomial_upper(0, runs, 0.05) == pytest.approx(1 - 0.05 ** (1 / runs), rel=1e-9)


def test_some_fails_bound_matches_the_beta_quantile() -> None:
    """2 fails in 200: the 95% upper bound is the 0.95 quantile of Beta(3, 198), 0.03114."""
    bound = binomial_upper(2, 200, 0.05)
    assert bound == pytest.approx(0.031142, abs=2e-6)
    tail = sum(math.comb(200, k) * bound**k * (1 - bound) ** (200 - k) for k in range(3))
    assert tail == pytest.approx(0.05, abs=1e-6)


def test_summary_gives_each_threshold_its_bound() -> None:
    accuracies = [1.0] * 197 + [0.9, 0.7, 0.6]
    summary = Calibration(accuracies, {"full_credit": 0.75, "half_credit": 0.5}).summary()
    assert summary["full_credit"]["observed_fails"] == 2
    assert summary["full_credit"]["fail_rate_upper_95"] == pytest.approx(0.031142, abs=2e-6)
    assert summary["half_credit"]["observed_fails"] == 0
    assert summary["half_credit"]["fail_rate_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 200), abs=1e-6)


def build(source: str | None, settings: dict, seed: int):
    """VisionTransformer(*model) from SOURCE (a corpus definition; None: the reference), seeded."""
    import torch
    import torch.nn as nn

    from reference import vit

    namespace = {"torch": torch, "nn": nn, "PatchEmbedding": vit.PatchEmbedding, "VisionTransformer": vit.VisionTransformer}
    if source is not None:
        exec(source, namespace)
    torch.manual_seed(seed)
    return namespace["VisionTransformer"](*settings["model"])


SETTINGS = tomllib.loads((ROOT / "test_cases" / "hidden" / "suite.toml").read_text())["train"]


def test_the_training_task_needs_attention() -> None:
    """With the suite's [train] settings, the reference reaches full credit, while models that sum
    per-token terms (a linear map of the pixels) or mix tokens only by pooling (per-token MLPs,
    mean-pooled) stay below half credit: the task is learned only with attention between tokens."""
    seed = 7
    found = {
        name: held_out_accuracy(build(source, SETTINGS, seed), SETTINGS, seed)
        for name, source in (("reference", None), ("linear", LINEAR_VIT), ("mean_pooled", MEAN_POOLED_VIT))
    }
    assert found["reference"] >= SETTINGS["full_credit"], found
    assert found["linear"] < SETTINGS["half_credit"] and found["mean_pooled"] < SETTINGS["half_credit"], found


def test_patterns_from_the_hidden_seed_defeat_a_detector() -> None:
    """A model that looks for the patterns of seeds a student could guess answers a public seed's
    task perfectly, and a grade's hidden seed's below full credit. What it keeps (about 70%) comes
    from comparing the nearest guesses of the two most marker-like patches: a hand-written hard
    attention, not knowledge of the patterns (the vit anchor withholds its train points anyway)."""
    public = held_out_accuracy(build(DETECTOR_VIT, SETTINGS, 7), SETTINGS, 7)
    hidden = held_out_accuracy(build(DETECTOR_VIT, SETTINGS, 123457), SETTINGS, 123457)
    assert public > 0.95 and hidden < SETTINGS["full_credit"], (public, hidden)

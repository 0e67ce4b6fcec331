"""Hidden training check: the grader's loop trains your ViT on a synthetic task whose label
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)
says whether two marker patches carry the same pattern, and the trusted side scores held-out
predictions.
Thresholds come from `vitgrade calibrate` (suite.toml [train])."""

import json
from pathlib import Path

import torch

from vitgrade.runner.api import case, expect, training_check_data

RUNS: dict[tuple[int, int], float] = {}
BAND = json.loads((Path(__file__).parent / "calibration.json").read_text()).get("loss_band")  # the reference's runs


def accuracy(student, seed, suite_config, figures):
    """Train once per run and worker; both credit tiers read the same result."""
    key = (id(student.session), seed)
    if key not in RUNS:
        s = suite_config["train"]
        images, labels, held_out, truth = training_check_data(s, seed)
        model = student.build("VisionTransformer", *s["model"], seed=seed)
        losses = model.fit(images, labels, steps=int(s["steps"]), batch_size=int(s["batch_size"]), lr=float(s["lr"]),
                           weight_decay=float(s["weight_decay"]), seed=seed)
        if BAND:
            figures.training(torch.as_tensor(losses), BAND, f"training loss over the grader's {s['steps']} steps: your ViT "
                             f"(line) and the range of {BAND['runs']} runs of the reference (band)")
        predictions = model.predict(held_out)
        expect(isinstance(predictions, torch.Tensor) and predictions.shape == truth.shape, "the model's predictions have the wrong shape")
        RUNS[key] = float((predictions == truth).float().mean())
    return RUNS[key]


@case(unit="train", points={"edition": 2, "course": 3}, visibility="after_due_date", timeout=60, requires=("vit",))
def test_reaches_half_credit_accuracy(student, seed, suite_config, figures):
    """after the grader's short training run, held-out accuracy reaches the half-credit threshold"""
    acc, need = accuracy(student, seed, suite_config, figures), float(suite_config["train"]["half_credit"])
    expect(acc >= need, f"held-out accuracy {acc:.1%} after training is below {need:.0%} (chance is 50%): the "
                        "task needs tokens to attend to each other by content: check attention and the class token")


@case(unit="train", points={"edition": 2, "course": 3}, visibility="after_due_date", timeout=60, requires=("vit",))
def test_reaches_full_credit_accuracy(student, seed, suite_config, figures):
    """after the grader's short training run, held-out accuracy reaches the full-credit threshold"""
    acc, need = accuracy(student, seed, suite_config, figures), float(suite_config["train"]["full_credit"])
    expect(acc >= need, f"held-out accuracy {acc:.1%} after training is below {need:.0%}")

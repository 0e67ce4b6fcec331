"""Hidden training check: the grader's loop trains your ViT on a synthetic task whose label
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)
says whether two marker patches carry the same pattern, and the trusted side scores held-out
predictions.
Thresholds come from `vitgrade calibrate` (suite.toml [train])."""

import json
from pathlib import Path

import torch

from vitgrade.runner.api import case, expect, inform, training_check_data, training_seeds

RUNS: dict[tuple[int, int], list[float]] = {}
BAND = json.loads((Path(__file__).parent / "calibration.json").read_text()).get("loss_band")  # the reference's runs


def accuracies(student, seed, suite_config, figures):
    """Held-out accuracy of each training run, once per grade and worker (both credit tiers read them):
    the first on the grade's hidden seed, then, while below full credit, up to [train] attempts runs
    on fresh hidden seeds. The best counts: a correct ViT that converges slowly on one draw is not
    failed for it (README, "Calibration of the training check")."""
    key = (id(student.session), seed)
    if key not in RUNS:
        s = suite_config["train"]
        runs, curves = [], []
        for run_seed in training_seeds(seed, int(s["attempts"])):
            images, labels, held_out, truth = training_check_data(s, run_seed)
            model = student.build("VisionTransformer", *s["model"], seed=run_seed)
            curves.append(model.fit(images, labels, steps=int(s["steps"]), batch_size=int(s["batch_size"]), lr=float(s["lr"]),
                                    weight_decay=float(s["weight_decay"]), seed=run_seed))
            predictions = model.predict(held_out)
            expect(isinstance(predictions, torch.Tensor) and predictions.shape == truth.shape, "the model's predictions have the wrong shape")
            runs.append(float((predictions == truth).float().mean()))
            if runs[-1] >= float(s["full_credit"]):
                break
        RUNS[key] = runs
        if BAND:
            best = curves[runs.index(max(runs))]
            figures.training(torch.as_tensor(best), BAND, f"training loss over the grader's {s['steps']} steps: your ViT "
                             f"(line) and the range of {BAND['runs']} runs of the reference (band)")
    return RUNS[key]


def each(runs):
    """'79.5% on the first, 97.1% on the second'."""
    return ", ".join(f"{a:.1%} on the {('first', 'second', 'third', 'fourth', 'fifth')[i]}" for i, a in enumerate(runs))


def judged(runs, need, hint=""):
    """The verdict on the best run against NEED; every run is named where there was more than one."""
    if len(runs) == 1:
        expect(runs[0] >= need, f"held-out accuracy {runs[0]:.1%} after training is below {need:.0%}{hint}")
        return
    expect(max(runs) >= need, f"held-out accuracy after training is below {need:.0%} on each of {len(runs)} runs, "
                              f"each on its own hidden seed ({each(runs)}){hint}")
    inform(f"held-out accuracy {max(runs):.1%}: the best of {len(runs)} runs, each on its own hidden seed ({each(runs)})")


@case(unit="train", points={"edition": 2, "course": 3}, visibility="after_due_date", timeout=90, requires=("vit",))
def test_reaches_half_credit_accuracy(student, seed, suite_config, figures):
    """after the grader's short training run, held-out accuracy reaches the half-credit threshold"""
    judged(accuracies(student, seed, suite_config, figures), float(suite_config["train"]["half_credit"]),
           " (chance is 50%): the task needs tokens to attend to each other by content: check attention and the class token")


@case(unit="train", points={"edition": 2, "course": 3}, visibility="after_due_date", timeout=90, requires=("vit",))
def test_reaches_full_credit_accuracy(student, seed, suite_config, figures):
    """after the grader's short training run, held-out accuracy reaches the full-credit threshold"""
    judged(accuracies(student, seed, suite_config, figures), float(suite_config["train"]["full_credit"]))

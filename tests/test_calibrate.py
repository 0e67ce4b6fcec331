"""The calibration's confidence bound (exact Clopper-Pearson, with no model of the tail), and the
training task's two sides: the reference learns it, models without attention and detectors do not."""

from __future__ import annotations

import json
import math
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, grade
from tests.corpus.degenerate import DETECTOR_VIT, LINEAR_VIT, MEAN_POOLED_VIT
from tests.corpus.mutants import REFERENCE
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
    """Per run, and per grade: a grade that repeats a run below full credit (2 attempts) fails a
    threshold only when both of its independent runs miss it."""
    accuracies = [1.0] * 197 + [0.9, 0.7, 0.6]
    summary = Calibration(accuracies, {"full_credit": 0.75, "half_credit": 0.5}, attempts=2).summary()
    assert summary["full_credit"]["observed_fails"] == 2
    assert summary["full_credit"]["fail_rate_upper_95"] == pytest.approx(0.031142, abs=2e-6)
    assert summary["full_credit"]["grade_fail_rate_upper_95"] == pytest.approx(0.031142**2, rel=1e-3)
    assert summary["half_credit"]["observed_fails"] == 0
    assert summary["half_credit"]["fail_rate_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 200), abs=1e-6)
    assert summary["half_credit"]["grade_fail_rate_upper_95"] == pytest.approx((1 - 0.05 ** (1 / 200)) ** 2, rel=1e-3)


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


def test_the_training_run_starts_from_the_reference_s_rules() -> None:
    """The grader trains from weights drawn per kind of layer by the laws the reference's own init
    follows, so its calibration holds for the start, whatever the student's init: LayerNorms 1 and
    0, Linear and Conv2d U(+-1/sqrt(fan_in)), class token and positions N(0, 0.02). The draw depends
    on the seed and the names only; a raw matrix (its fan-in unknown) keeps the student's values."""
    import torch

    from vitgrade.training import reference_initialization

    def start(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
        params = [name for name, _ in model.named_parameters()]
        modules = {name: f"{type(m).__module__}.{type(m).__name__}" for name, m in model.named_modules()}
        return reference_initialization(model.state_dict(), params, modules, seed)

    def follows_the_reference_s_laws(state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            owner = name.rsplit(".", 1)[0]
            if owner.endswith(("norm", "norm1", "norm2")):
                assert torch.equal(value, torch.full_like(value, 1.0 if name.endswith("weight") else 0.0)), name
                continue
            if value.dim() == 3:
                bound, std = math.inf, 0.02
            else:
                bound = 1 / math.sqrt(state[f"{owner}.weight"][0].numel())
                std = bound / math.sqrt(3)
            assert value.abs().max() <= bound, name
            if value.numel() >= 500:
                assert value.std().item() == pytest.approx(std, rel=0.15), name

    reference = build(None, SETTINGS, 0)
    zeroed = build(None, SETTINGS, 1)
    with torch.no_grad():
        for p in zeroed.parameters():
            p.zero_()
    follows_the_reference_s_laws(reference.state_dict())
    drawn = start(reference, 5)
    follows_the_reference_s_laws(drawn)
    assert all(torch.equal(value, start(zeroed, 5)[name]) for name, value in drawn.items())
    assert not torch.equal(drawn["head.weight"], start(reference, 6)["head.weight"])

    raw = torch.nn.Module()
    raw.w = torch.nn.Parameter(torch.ones(3, 5))
    raw.fc = torch.nn.Linear(5, 3)
    raw.fc.weight.data.zero_()
    kept = start(raw, 5)
    assert torch.equal(kept["w"], torch.ones(3, 5)) and kept["fc.weight"].abs().min() > 0


def test_the_grader_s_adamw_is_torch_s() -> None:
    """The loop's own AdamW (torch's imports torch._dynamo) takes torch's steps exactly, so the
    calibration measured with torch's optimizer holds for it. Both run here, in one process."""
    import torch

    from vitgrade.training import AdamW

    def trained(make):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
        unused = torch.nn.Parameter(torch.ones(2))  # never gets a gradient: no step, as in torch
        optimizer = make([*model.parameters(), unused])
        for step in range(30):
            x = torch.randn(16, 6, generator=torch.Generator().manual_seed(step))
            loss = model(x).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return [p.detach() for p in model.parameters()] + [unused.detach()]

    ours = trained(lambda params: AdamW(params, lr=2e-3, weight_decay=0.01))
    theirs = trained(lambda params: torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert not torch.equal(ours[0], trained(lambda params: AdamW(params, lr=2e-3, weight_decay=0.0))[0])


def test_a_calibration_grows_over_sittings(tmp_path) -> None:
    """--add-to runs the seeds after those a file holds and rewrites its summary over all runs, keeping
    the loss band: the thousands of runs a 1-in-1000 bound needs can be spread over several sittings."""
    import json

    from tests.conftest import vitgrade

    recorded = {"first_seed": 1000, "accuracies": [0.97, 0.98], "loss_band": {"runs": 1, "low": [0.7], "high": [0.7]}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(recorded))
    done = vitgrade("calibrate", "--add-to", str(path), "--seeds", "1", "--jobs", "1")
    assert done.returncode == 0, done.stderr
    grown = json.loads(path.read_text())
    assert grown["seeds"] == 3 and grown["accuracies"][:2] == [0.97, 0.98] and 0.85 < grown["accuracies"][2] <= 1
    assert grown["first_seed"] == 1000 and grown["loss_band"] == recorded["loss_band"]
    assert grown["full_credit"]["fail_rate_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 3), abs=1e-6)
    assert "accuracies" not in json.loads(done.stdout)


@pytest.mark.parametrize(
    ("text", "says"),
    [("{", "Invalid JSON"), ('{"seeds": 3}', "accuracies: Field required"), ('{"accuracies": [97.5]}', "accuracies.0")],
)
def test_growing_a_file_that_is_no_calibration_names_it(tmp_path, text: str, says: str) -> None:
    """An instructor who points --add-to at the wrong file gets one line naming it and the problem,
    before any training starts, and the file is left as it was."""
    from tests.conftest import vitgrade

    path = tmp_path / "results.json"
    path.write_text(text)
    done = vitgrade("calibrate", "--add-to", str(path), "--seeds", "1", "--jobs", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{path} is not a calibration file to grow" in done.stderr and says in done.stderr
    assert path.read_text() == text


def test_a_run_below_full_credit_is_repeated_on_another_hidden_seed(examples: Path, tmp_path: Path) -> None:
    """With full credit out of reach, a grade trains twice, on two hidden seeds, and says both runs in
    each credit tier's message; the better one counts (half credit passes)."""
    hidden = ROOT / "test_cases" / "hidden"
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("test_train_hidden.py", "calibration.json"):
        shutil.copy(hidden / name, suite)
    text = (hidden / "suite.toml").read_text()
    settings = text[text.index("[train]") : text.index("[data]")]
    assert "full_credit = 0.85" in settings and "attempts = 2" in settings
    (suite / "suite.toml").write_text(f'name = "retry"\nversion = "1"\nreference = {json.dumps(str(REFERENCE))}\n\n'
                                      + settings.replace("full_credit = 0.85", "full_credit = 0.999"))  # fmt: skip
    report = grade(examples / "solved.ipynb", tmp_path / "r.json", "--suite", str(suite), "--seed", "5")
    half, full = (next(t for t in report["tests"] if tier in t["name"]) for tier in ("half-credit", "full-credit"))
    runs = re.findall(r"(\d+\.\d%) on the (first|second)", full["output"])
    assert full["status"] == "failed" and [which for _, which in runs] == ["first", "second"], full
    assert "below 100% on each of 2 runs, each on its own hidden seed" in full["output"], full
    best = max(runs, key=lambda run: float(run[0][:-1]))[0]
    assert half["status"] == "passed" and f"held-out accuracy {best}: the best of 2 runs" in half["output"], half

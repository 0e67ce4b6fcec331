"""Grading one submission end to end, through the real CLI and a real worker process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from tests.conftest import (
    ROOT,
    failures,
    grade,
    grade_all,
    unit_scores,
    vitgrade,
    without_timings,
)
from tests.corpus.mutants import REFERENCE

GRADESCOPE_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "gradescope_results.schema.json").read_text())
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "report.schema.json").read_text())


@pytest.fixture(scope="module")
def reports(examples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return grade_all(
        {
            "solved_full": (examples / "solved.ipynb", ("--suite", "full", "--seed", "11")),
            "solved_again": (examples / "solved.ipynb", ("--suite", "full", "--seed", "11")),
            "blank_full": (examples / "blank.ipynb", ("--suite", "full", "--seed", "11")),
        },
        tmp_path_factory.mktemp("reports"),
    )


def test_solved_notebook_scores_full_marks(reports: dict[str, dict]) -> None:
    report = reports["solved_full"]
    assert report["max_score"] == 50, "the suites are worth 50 implementation points"
    assert report["score"] == 50, failures(report)
    assert {t["status"] for t in report["tests"] if t["max_score"] > 0} == {"passed"}
    assert {t["status"] for t in report["tests"] if t["max_score"] == 0} == {"skipped"}  # no CIFAR folder configured
    assert set(unit_scores(report)) == {"sdpa", "mask", "patch", "mhsa", "block", "vit", "train", "policy"}
    jsonschema.validate(report, REPORT_SCHEMA)


def test_blank_template_scores_zero_without_tracebacks(reports: dict[str, dict]) -> None:
    report = reports["blank_full"]
    assert report["status"] == "ok" and report["score"] == 0
    for test in (t for t in report["tests"] if t["max_score"] > 0):
        assert test["status"] in {"failed", "error"}
        assert "Traceback" not in test["output"] and 'File "' not in test["output"]
    # one clear message per unit: each names the definition that is still a TODO
    for unit, name in {"sdpa": "scaled_dot_product_attention", "patch": "PatchEmbedding", "mhsa": "MultiHeadSelfAttention",
                       "block": "TransformerBlock", "vit": "VisionTransformer"}.items():
        messages = {t["output"] for t in report["tests"] if t["unit"] == unit and t["max_score"] > 0}
        assert all("not implemented yet" in m and name in m for m in messages), messages


def test_figures_put_the_students_attention_and_training_beside_the_references(reports: dict[str, dict]) -> None:
    attention = reports["solved_full"]["figures"]["attention"]
    student, reference = torch.tensor(attention["student"]), torch.tensor(attention["reference"])
    assert student.shape == reference.shape and student.shape[0] > 1 and torch.allclose(student, reference, atol=1e-3)
    assert torch.allclose(student.sum(-1), torch.ones(student.shape[0]), atol=1e-2)
    assert attention["test"] in {t["name"] for t in reports["solved_full"]["tests"] if t["unit"] == "sdpa"}
    training = reports["solved_full"]["figures"]["training"]
    curve, low, high = (torch.tensor(training[k]) for k in ("student", "low", "high"))
    assert len(curve) == len(low) == len(high) > 10 and bool((low <= high).all())
    assert curve[-5:].mean() < curve[:5].mean()  # the loss went down
    inside = ((curve >= low - 0.05) & (curve <= high + 0.05)).float().mean()
    assert inside > 0.8, f"the reference solution's curve should lie in the reference band; {inside:.0%} of it does"
    assert reports["blank_full"]["figures"] == {"attention": None, "training": None}  # nothing ran: nothing drawn


def test_same_submission_suite_and_seed_give_the_same_report(reports: dict[str, dict]) -> None:
    assert without_timings(reports["solved_full"]) == without_timings(reports["solved_again"])
    assert reports["solved_full"]["seed"] == 11


def test_hidden_seed_is_fresh_and_recorded(examples: Path, tmp_path: Path) -> None:
    seeds = {grade(examples / "blank.ipynb", tmp_path / f"r{i}.json", "--suite", "full")["seed"] for i in range(2)}
    assert len(seeds) == 2


def test_gradescope_format_is_valid(examples: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = vitgrade("grade", str(examples / "blank.ipynb"), "--format", "gradescope", "--json", str(out))
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 0 and len(results["tests"]) == 18
    assert {t["visibility"] for t in results["tests"]} == {"visible"}


def test_check_prints_a_table_with_the_total(examples: Path, tmp_path: Path) -> None:
    done = vitgrade("check", str(examples / "solved.ipynb"), "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    assert "Total: 18 / 18" in done.stdout
    assert json.loads((tmp_path / "r.json").read_text())["suite"]["name"] == "public"


def test_pytest_plugins_installed_beside_the_grader_take_no_part(
    examples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grade is the suite's cases and vitgrade's plugin only: a pytest plugin that happens to be
    installed (one that reorders, reseeds or drops tests) neither loads nor changes the score."""
    site = tmp_path / "site"
    (site / "intruder-1.0.dist-info").mkdir(parents=True)
    (site / "intruder-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: intruder\nVersion: 1.0\n")
    (site / "intruder-1.0.dist-info" / "entry_points.txt").write_text("[pytest11]\nintruder = intruder\n")
    (site / "intruder.py").write_text(
        f"open({str(tmp_path / 'loaded')!r}, 'w').close()\n\n\n"
        "def pytest_collection_modifyitems(items):\n    items[:] = []\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(site))
    done = vitgrade("check", str(examples / "solved.ipynb"))
    assert done.returncode == 0, done.stderr
    assert "Total: 18 / 18" in done.stdout, done.stdout
    assert not (tmp_path / "loaded").exists()


def test_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "broken.ipynb"
    bad.write_text("{nope")
    done = vitgrade("grade", str(bad))
    assert done.returncode == 0, "a report was produced, so the exit code is 0"
    report = json.loads(done.stdout)
    assert report["status"] == "error" and "not a readable Jupyter notebook" in report["error"]
    done = vitgrade("grade", str(bad), "--suite", str(tmp_path))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "not a suite" in done.stderr


def test_grader_process_never_imports_student_code(tmp_path: Path) -> None:
    """Import-time code (a class body) runs in a worker, a child of the `vitgrade grade` process,
    never in that trusted process itself, and leaves its marker only in the worker's own temp dir."""
    log = tmp_path / "imports.log"
    hostile = REFERENCE.read_text().replace(
        "class PatchEmbedding(nn.Module):\n",
        "class PatchEmbedding(nn.Module):\n"
        "    import os as _os\n"
        "    open('MARKER', 'w').write('imported')\n"
        f"    open({str(log)!r}, 'a').write(f'{{_os.getpid()}} {{_os.getppid()}} {{_os.getcwd()}}\\n')\n",
    )
    sub = tmp_path / "marker.py"
    sub.write_text(hostile)
    cwd = tmp_path / "grader-cwd"
    cwd.mkdir()
    # The process backend can write outside its temp dir, which is what lets this test watch it.
    out = tmp_path / "r.json"
    argv = [sys.executable, "-m", "vitgrade", "grade", str(sub), "--json", str(out), "--backend", "process"]
    env = {**os.environ, "VITGRADE_COURSE": str(ROOT)}
    grader = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = grader.communicate(timeout=900)
    assert grader.returncode == 0, stderr
    assert json.loads(out.read_text())["score"] == 18
    assert not (cwd / "MARKER").exists() and not (ROOT / "MARKER").exists()
    entries = [line.split(" ", 2) for line in log.read_text().splitlines()]
    assert entries, "the worker imported the submission"
    for pid, parent, where in entries:
        assert int(pid) != grader.pid, "the grading process itself ran the student's code"
        assert int(parent) == grader.pid, "the student's code ran somewhere other than a worker of this grade"
        assert re.search(r"vitgrade-[^/]+/work-", where), f"imported outside a worker temp dir: {where}"
        assert not Path(where).exists(), "the worker's temp dir is removed after grading"


def test_imports_no_kept_code_uses_are_not_run(tmp_path: Path) -> None:
    """The course's torchvision import costs a worker 2 s and changes nothing that is graded."""
    source = REFERENCE.read_text().replace("/ math.sqrt(d_k)", "/ statistics.fmean([d_k]) ** 0.5")
    source = source.replace(
        "import math\n",
        "import math\nimport statistics\nimport mailbox\nfrom torchvision import datasets, transforms\n"
        "from google.colab import drive\n",
    )
    sub = tmp_path / "imports.py"
    sub.write_text(source)
    report = grade(sub, tmp_path / "r.json")
    assert report["score"] == 18, failures(report)  # sdpa needs `statistics`: that import ran
    reasons = [d["reason"] for d in report["diagnostics"]]
    assert "import not run: no kept code uses mailbox" in reasons
    assert "import not run: no kept code uses datasets, transforms" in reasons
    assert any(r.startswith("import failed: ModuleNotFoundError") and "google" in r for r in reasons), reasons
    assert not any("statistics" in r for r in reasons)


def test_hang_and_memory_bomb_cost_only_their_own_tests(tmp_path: Path) -> None:
    """A hang in TransformerBlock when it gets a mask, a memory bomb for a batch of 4 images: each
    costs the one test that triggers it (neither is a unit's anchor), and every other test passes."""
    block_line = "        x = x + self.drop(self.attn(self.norm1(x), mask))  # (B, N, D)\n"
    source = REFERENCE.read_text()
    assert source.count(block_line) == 1
    source = source.replace(
        block_line, "        while mask is not None:\n            pass\n" + block_line,
    ).replace(
        "        x = self.patch_embed(x)  # (B, N, D)\n",
        "        if x.shape[0] == 4:\n            bytearray(2**34)\n        x = self.patch_embed(x)  # (B, N, D)\n",
    )
    sub = tmp_path / "hang_oom.py"
    sub.write_text(source)
    report = grade(sub, tmp_path / "r.json")
    by_name = {t["name"]: t for t in report["tests"]}
    hang = next(t for n, t in by_name.items() if n.startswith("the mask is passed down"))
    probs = next(t for n, t in by_name.items() if n.startswith("the model returns logits"))
    assert hang["status"] == "timeout", hang
    assert probs["status"] == "oom", probs
    others = [t for t in report["tests"] if t is not hang and t is not probs]
    assert all(t["status"] == "passed" for t in others), failures(report)
    assert report["score"] == 16


def test_published_report_schema_is_current() -> None:
    done = vitgrade("schema")
    assert done.returncode == 0 and json.loads(done.stdout) == REPORT_SCHEMA, "regenerate with: vitgrade schema --out schemas/report.schema.json"

"""Regrades without running student code: a grade with --programs records what the worker
answered; `--replay` judges a changed suite on those answers. Through the real CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.conftest import ROOT, failures, grade
from tests.corpus.mutants import REFERENCE
from vitgrade.submission import sha256_of

SEED = "31"
NEW_CASE = '''

@case(unit="mhsa", points=1, visibility="after_due_date")
def test_a_size_never_asked_before(student, rng):
    """MultiHeadSelfAttention(40, 5) keeps the shape"""
    x = torch.randn(2, 3, 40, generator=rng)
    expect_shape(student.build("MultiHeadSelfAttention", 40, 5, seed=0)(x), (2, 3, 40), "output")
'''


def suite_copy(folder: Path, changed: bool) -> Path:
    """The hidden suite in a folder of its own; `changed`: a stricter training threshold and one new case.
    The changed suite trains once, as the recorded grade did: a second run would need new answers."""
    shutil.copytree(ROOT / "test_cases" / "hidden", folder, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (folder / "suite.toml").read_text().replace('"../../reference/vit.py"', json.dumps(str(REFERENCE)))
    if changed:
        toml = re.sub(r"^full_credit = .*$", "full_credit = 0.999", toml, flags=re.M)
        toml = re.sub(r"^attempts = .*$", "attempts = 1", toml, flags=re.M)
        mhsa = folder / "test_mhsa_hidden.py"
        mhsa.write_text(mhsa.read_text() + NEW_CASE)
    (folder / "suite.toml").write_text(toml)
    return folder


def test_a_changed_suite_is_judged_on_the_recorded_answers(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    submission = tmp_path / "ab1234.py"
    at = "class PatchEmbedding(nn.Module):\n"
    submission.write_text(REFERENCE.read_text().replace(at, f"{at}    _ran = open({str(marker)!r}, 'a').write('ran')\n", 1))
    store = tmp_path / "programs"
    first = grade(submission, tmp_path / "first.json", "--suite", str(suite_copy(tmp_path / "old", False)), "--seed", SEED,
                  "--backend", "process", "--programs", str(store))  # fmt: skip
    assert first["status"] == "ok" and first["tests_score"] == first["max_score"], failures(first)
    assert marker.read_text() == "ran" and list(store.glob("*.transcript"))
    marker.unlink()

    again = grade(submission, tmp_path / "again.json", "--suite", str(suite_copy(tmp_path / "new", True)), "--seed", SEED,
                  "--replay", str(store))  # fmt: skip
    assert not marker.exists(), "the replay ran the submission's code"
    assert again["status"] == "ok" and again["environment"]["isolation"]["backend"] == "replay"
    assert any("replayed" in d["reason"] for d in again["diagnostics"])
    before = {t["name"]: t for t in first["tests"]}
    for test in again["tests"]:
        if test["name"] == "MultiHeadSelfAttention(40, 5) keeps the shape":
            assert test["status"] == "error" and "needs your code to run again" in test["output"]
        elif test["name"] == "after the grader's short training run, held-out accuracy reaches the full-credit threshold":
            assert test["score"] == 0 and "is below 100%" in test["output"], test  # 99.9% now, on the recorded program
        else:
            assert (test["status"], test["score"], test["output"]) == (before[test["name"]]["status"], before[test["name"]]["score"],
                                                                       before[test["name"]]["output"]), test["name"]  # fmt: skip
    assert {p["sha256"] for p in again["programs"]} <= {p["sha256"] for p in first["programs"]}


def test_a_replay_without_a_recording_says_so(tmp_path: Path) -> None:
    submission = tmp_path / "cd5678.py"
    submission.write_text(REFERENCE.read_text())
    (tmp_path / "empty").mkdir()
    report = grade(submission, tmp_path / "report.json", "--suite", "public", "--replay", str(tmp_path / "empty"))
    assert report["status"] == "error" and "no recorded grade of this submission" in report["error"]
    (tmp_path / "empty" / f"{sha256_of(submission)}.transcript").write_bytes(b"not frames of the protocol")
    report = grade(submission, tmp_path / "report.json", "--suite", "public", "--replay", str(tmp_path / "empty"))
    assert report["status"] == "error" and "cannot be read" in report["error"]

"""A stand-in for `vitgrade.grade` that the service's tests name with `serve --grader`: it sleeps
instead of computing, so queueing, leases and faults can be tested in seconds, and it logs each
grade so a test can count them (with VITGRADE_STUB_DIE set it kills itself instead). Its report has
a test at each of Gradescope's visibility levels, and both pictures (an attention map and a
training curve) for the pages; their text has markup characters, which a page must escape."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

from vitgrade.api import GradeOptions
from vitgrade.report.models import (
    AttentionMap,
    Figures,
    Report,
    SubmissionInfo,
    SuiteInfo,
    TestResult,
    TrainingCurve,
    Visibility,
)
from vitgrade.submission import sha256_of

LEVELS: tuple[tuple[Visibility, float], ...] = (("visible", 1.0), ("after_due_date", 2.0), ("after_published", 3.0), ("hidden", 4.0))
OUTPUT = "fed: q, k, v of shape (2, 4, 8, 16), seed 0\nexpected: softmax(q @ k^T / 4) @ v\nfound: max |difference| 3e-07 < 1e-05"
CAPTION = 'head 0 of layer 0 on the grader\'s image, tokens "<cls>" & 7 patches'


def softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def figures() -> Figures:
    """An 8-token attention map (the student's a little off the reference's), shown with the visible
    test, and a 30-step loss curve inside its band, shown with the test shown after the due date."""
    reference = [softmax([-abs(i - j) * 0.8 for j in range(8)]) for i in range(8)]
    student = [softmax([-abs(i - j) * 0.6 + 0.1 * (j % 3) for j in range(8)]) for i in range(8)]
    middle = [2.3 * math.exp(-step / 10) + 0.4 for step in range(30)]
    return Figures(attention=AttentionMap(test="a visible test", caption=CAPTION, student=student, reference=reference),
                   training=TrainingCurve(test="a after_due_date test", caption="loss per step of a 30-step run on 256 CIFAR-10 images <batch 32>",
                                          student=[m * (1.05 + 0.04 * math.sin(step)) for step, m in enumerate(middle)],
                                          low=[m * 0.9 for m in middle], high=[m * 1.15 for m in middle]))  # fmt: skip


def grade(path: str, options: GradeOptions) -> Report:
    sha = sha256_of(Path(path))
    log = os.environ.get("VITGRADE_STUB_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"start {sha} {os.getpid()}\n")
    if os.environ.get("VITGRADE_STUB_DIE"):  # a grading process that dies, every time, without a report
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(os.environ.get("VITGRADE_STUB_SLEEP", "0.5")))
    tests = [TestResult(name=f"a {level} test", unit="sdpa", score=points, max_score=points, status="passed", visibility=level,
                        output=OUTPUT) for level, points in LEVELS]  # fmt: skip
    total = sum(t.score for t in tests)
    report = Report(submission=SubmissionInfo(path=Path(path).name, sha256=sha, student=options.student),
                    suite=SuiteInfo(name=options.suite, version="stub"), seed=options.seed or 0, tests=tests,
                    score=total, max_score=total, tests_score=total, duration_s=0.1, figures=figures())
    if log:
        with open(log, "a") as fh:
            fh.write(f"done {sha} {os.getpid()}\n")
    return report

"""Every string from a submission or a worker is made safe before it reaches a report: half an
emoji (a lone surrogate, valid in a notebook's JSON) can neither stop a grade nor its report."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from tests.conftest import grade
from vitgrade.report.models import Report, SubmissionInfo, SuiteInfo

from .test_kit import solved_notebook

HALF_EMOJI = "\ud83d"


def test_a_lone_surrogate_in_a_dropped_cell_is_graded(tmp_path: Path) -> None:
    notebook = solved_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell(f'print("half an emoji: {HALF_EMOJI}")'))
    path = tmp_path / "surrogate.ipynb"
    path.write_text(json.dumps(notebook))  # ASCII JSON: the surrogate travels as \\ud83d, as Jupyter would write it
    report = grade(path, tmp_path / "r.json")
    assert report["status"] == "ok" and report["score"] == 18
    assert any("\ufffd" in d["reason"] for d in report["diagnostics"]), report["diagnostics"]


def test_the_report_model_replaces_lone_surrogates_everywhere() -> None:
    report = Report(
        error=f"bad {HALF_EMOJI}",
        submission=SubmissionInfo(path=f"{HALF_EMOJI}.ipynb"),
        suite=SuiteInfo(name="public", version="1"),
        seed=0,
        diagnostics=[{"where": "cell 1", "action": "note", "reason": f"x{HALF_EMOJI}"}],
    )
    text = report.model_dump_json()
    text.encode("utf-8")  # would raise on a surrogate
    assert report.error == "bad \ufffd" and report.submission.path == "\ufffd.ipynb" and report.diagnostics[0].reason == "x\ufffd"

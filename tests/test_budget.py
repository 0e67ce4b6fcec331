"""The whole grade's budget: correct code that pauses just under each test's limit cannot make one
grade take many times the normal time; the report is still written, and says why."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .conftest import ROOT, vitgrade

SLOW_FORWARD = "    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:\n"


def slow_reference(tmp_path: Path) -> Path:
    """The reference, with a 4 s pause in every MultiHeadSelfAttention forward (each test allows 20 s)."""
    source = (ROOT / "reference" / "vit.py").read_text()
    head, mhsa = source.split("class MultiHeadSelfAttention", 1)
    mhsa = mhsa.replace(SLOW_FORWARD, SLOW_FORWARD + "        import time; time.sleep(4)\n", 1)
    path = tmp_path / "slow.py"
    path.write_text(head + "class MultiHeadSelfAttention" + mhsa)
    return path


def test_a_grade_stops_at_its_budget_and_still_reports(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    started = time.monotonic()
    done = vitgrade("grade", str(slow_reference(tmp_path)), "--suite", "full", "--budget", "40", "--json", str(out), timeout=150)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["budget_s"] == 40 and report["budget_used_up"] is True
    assert took < 40 + 30, f"the grade took {took:.0f} s with a budget of 40 s"
    by_status: dict[str, list[dict]] = {}
    for test in report["tests"]:
        by_status.setdefault(test["status"], []).append(test)
    assert any(t["unit"] == "sdpa" for t in by_status["passed"]), "the tests before the budget ran out were graded"
    cut = by_status["timeout"]
    assert cut and all("time budget of 40 s was used up" in t["output"] for t in cut)
    assert {t["unit"] for t in cut} >= {"vit", "train"}


def test_check_has_the_budget_too(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = vitgrade("check", str(slow_reference(tmp_path)), "--budget", "15", "--json", str(out), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["budget_used_up"] and "Total:" in done.stdout
    assert any("time budget of 15 s was used up" in t["output"] for t in report["tests"])

"""Wrong, degenerate and lazy code gets few points: checks that zeros, identities or constants
pass count only once the unit reproduces the reference (its anchor), and the block and the ViT
are judged by what their own parts compute. Graded through the real CLI, full suite."""

from __future__ import annotations

import pytest

from tests.conftest import grade_all, unit_scores
from tests.corpus.degenerate import DEGENERATE, wrong_everywhere

SEED = "31"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("degenerate")
    jobs = {}
    for item in DEGENERATE:
        path = folder / f"{item.name}.py"
        path.write_text(item.source())
        jobs[item.name] = (path, ("--suite", "full", "--seed", SEED))
    path = folder / "wrong_everywhere.py"
    path.write_text(wrong_everywhere())
    jobs["wrong_everywhere"] = (path, ("--suite", "full", "--seed", SEED))
    return grade_all(jobs, folder / "reports")


@pytest.mark.parametrize("item", DEGENERATE, ids=lambda d: d.name)
def test_degenerate_code_earns_little(reports: dict[str, dict], item) -> None:
    report = reports[item.name]
    scores = unit_scores(report)
    assert report["score"] <= item.at_most, (report["score"], scores)
    assert all(scores[unit][0] == 0 for unit in item.nothing_in), scores


def test_wrong_everywhere_earns_at_most_10(reports: dict[str, dict]) -> None:
    report = reports["wrong_everywhere"]
    assert report["score"] <= 10, unit_scores(report)


def test_unearned_passes_say_why(reports: dict[str, dict]) -> None:
    """A property that passed without its anchor is shown as passed, with no points and the reason."""
    tests = reports["zeros"]["tests"]
    uncounted = [t for t in tests if t["status"] == "passed" and t["score"] == 0 and t["max_score"] > 0]
    assert uncounted and all("passed, but not counted" in t["output"] for t in uncounted)

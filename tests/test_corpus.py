"""The verdicts: every correct style gets full marks, every single-bug mutant loses points in
the unit it breaks and nowhere that does not depend on it. Graded through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import CORRECT, failures, grade_all, unit_scores
from tests.corpus.mutants import MUTANTS
from tests.notebooks import write_course_zip, write_nbformat_40, write_notebook
from vitgrade.runner.cases import UNITS

SEED = "23"


def submission(style: Path, folder: Path, marker: Path) -> Path:
    """Each style handed in a different way: .py, notebooks (Colab, nbformat 4.0), course zips."""
    source = style.read_text()
    name = style.stem
    if name in {"separate_postnorm", "raw_parameters"}:
        return style
    if name == "chunk_colab":
        return write_notebook(source, folder / f"{name}.ipynb", colab=True, marker=str(marker))
    if name == "sequential_nb40":
        return write_nbformat_40(source, folder / f"{name}.ipynb")
    notebook = write_notebook(source, folder / f"{name}.ipynb", marker=str(marker))
    if name == "fused_kv_extra_args":
        return write_course_zip(notebook, folder / "ab1234.zip")
    if name == "additive_mask_postnorm":
        return write_course_zip(notebook, folder / "cd5678.zip", name="HW4-VIT-Student.ipynb")
    return notebook


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict], Path]:
    folder = tmp_path_factory.mktemp("corpus")
    marker = folder / "TRAINING_RAN"
    jobs = {f"correct-{s.stem}": (submission(s, folder, marker), ("--suite", "full", "--seed", SEED)) for s in CORRECT}
    for mutant in MUTANTS:
        path = folder / f"mutant_{mutant.name}.py"
        path.write_text(mutant.source())
        jobs[f"mutant-{mutant.name}"] = (path, ("--suite", "full", "--seed", SEED))
    return grade_all(jobs, folder / "reports"), marker


def test_corpus_has_enough_styles_and_mutants() -> None:
    assert len(CORRECT) >= 8
    assert len(MUTANTS) >= 20
    # every unit that holds student code has a bug of its own; train and policy have none (the
    # grader's loop trains the student's ViT; the policy judges uses): they lose with their anchors
    assert {u for m in MUTANTS for u in m.units} >= set(UNITS) - {"train", "policy"}


@pytest.mark.parametrize("style", [s.stem for s in CORRECT])
def test_correct_style_scores_full_marks(corpus: tuple[dict[str, dict], Path], style: str) -> None:
    reports, marker = corpus
    report = reports[f"correct-{style}"]
    assert report["status"] == "ok", report["error"]
    # tests_score: what the code earns; a misnamed notebook in a zip also costs 10% under course policy
    assert report["tests_score"] == report["max_score"] == 50, failures(report)
    assert not marker.exists(), "a training cell ran"


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_loses_points_where_the_bug_lives(corpus: tuple[dict[str, dict], Path], mutant) -> None:
    report = corpus[0][f"mutant-{mutant.name}"]
    units = unit_scores(report)
    for unit in mutant.units:
        score, most = units[unit]
        assert score < most, f"{mutant.name} keeps full marks in {unit}:\n{failures(report)}"
    for unit, (score, most) in units.items():
        if unit not in mutant.may_lose():
            assert score == most, f"{mutant.name} wrongly loses points in {unit}:\n{failures(report)}"
    lost = [t for t in report["tests"] if t["unit"] in mutant.units and t["score"] < t["max_score"]]
    assert all(t["output"] and "Traceback" not in t["output"] for t in lost), "every lost point comes with a message"


def test_the_attention_picture_shows_the_bug(corpus: tuple[dict[str, dict], Path]) -> None:
    """Softmax over the queries: the student's map on the feedback page differs from the reference's beside it."""
    attention = corpus[0]["mutant-softmax_over_queries"]["figures"]["attention"]
    student, reference = torch.tensor(attention["student"]), torch.tensor(attention["reference"])
    assert student.shape == reference.shape and (student - reference).abs().max() > 0.1
    assert torch.allclose(student.sum(-2), torch.ones(student.shape[1]), atol=1e-3)  # its columns sum to 1, not its rows

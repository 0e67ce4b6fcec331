"""The course contract: the course's own notebook (no attention function, no masks) is graded at
full marks in the styles of real course submissions, and each real bug seen in course notebooks
loses points in its unit with a message that names the cause. Graded through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import JOBS, failures, grade_all, unit_scores, vitgrade
from tests.corpus.course import BUGS, SEPARATE, STYLES
from tests.corpus.mutants import REFERENCE
from tests.notebooks import write_course_zip, write_notebook

SEED = "29"
EDITION = ("--suite", "full", "--seed", SEED)
COURSE = (*EDITION, "--contract", "course")

# What the message of a lost point must say, per bug: the cause, in the student's terms.
CAUSES = {
    "attention_over_channels": "attention runs between channels, not tokens",
    "attention_between_heads": "attention runs between the heads of each token",
    "qkv_split_on_heads_axis": "are q, k and v taken along the heads axis?",
    "scaled_by_embed_dim": "divided by sqrt(embed_dim)",
    "class_token_drawn_in_forward": "torch.randn for the class token",
    "class_token_in_patch_embedding": "the class token is added inside PatchEmbedding",
    "mean_pooling": "read the logits from the class token",
}
# Where each bug may lose points: its unit, and what is built on it by design. The training task
# needs working attention between tokens, so an attention bug may cost training points; the training
# run and the policy point count once the ViT's anchor passes. The q/k/v split on the heads axis
# raises with 4 heads, and the block and ViT cases build MHSA with 4 heads too. Everything else
# (the block and ViT properties that fail because of an MHSA bug included) keeps full marks.
MAY_LOSE = {
    "attention_over_channels": {"mhsa", "train"},
    "attention_between_heads": {"mhsa", "train"},
    "qkv_split_on_heads_axis": {"mhsa", "block", "vit", "train", "policy"},
    "scaled_by_embed_dim": {"mhsa", "train"},
    "class_token_drawn_in_forward": {"vit", "train", "policy"},
    "class_token_in_patch_embedding": {"patch"},
    "mean_pooling": {"vit", "train", "policy"},
}
TRUNC_NORMAL = "nn.init.trunc_normal_(m.weight, std=0.02)"  # the styles notebook's Linear init
# What the course did not ask for: no message of a course grade may ask for it.
NOT_ASKED = re.compile(r"your (own )?scaled_dot_product_attention|\bmask", re.I)


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The course notebooks graded by `vitgrade batch --contract course`, one by `grade` as the edition."""
    folder = tmp_path_factory.mktemp("course")
    class_ = folder / "class"
    class_.mkdir()
    source = STYLES.read_text()
    styles = write_notebook(source, class_ / "styles.ipynb", colab=True, marker=str(folder / "TRAINING_RAN"))
    write_course_zip(write_notebook(SEPARATE.read_text(), folder / "sep.ipynb"), class_ / "separate.zip")
    (class_ / "edition-reference.py").write_text(REFERENCE.read_text())
    assert TRUNC_NORMAL in source
    write_notebook(source.replace(TRUNC_NORMAL, "nn.init.zeros_(m.weight)"), class_ / "zero-init.ipynb")
    for bug in BUGS:
        write_notebook(bug.source(), class_ / f"{bug.name}.ipynb")
    done = vitgrade("batch", str(class_), "--out", str(folder / "out"), "--jobs", str(JOBS), *COURSE)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = {p.stem: json.loads(p.read_text()) for p in (folder / "out" / "reports").glob("*.json")}
    reports.update(grade_all({"styles-edition": (styles, EDITION)}, folder / "edition"))
    assert not (folder / "TRAINING_RAN").exists(), "a training cell ran"
    return reports


@pytest.mark.parametrize("style", ["styles", "separate", "edition-reference", "zero-init"])
def test_a_correct_course_notebook_gets_full_marks(graded: dict[str, dict], style: str) -> None:
    """zero-init sets every Linear weight to zero: trained from there it stays at chance (50.0% on
    every seed tried), but the grader trains from the reference's initialisation, since the
    training check judges the architecture, not the student's init."""
    report = graded[style]
    assert report["status"] == "ok", report["error"]
    assert report["suite"]["contract"] == "course"
    assert report["tests_score"] == report["max_score"] == 50, failures(report)
    assert {t["unit"] for t in report["tests"]} == {"patch", "mhsa", "block", "vit", "train", "policy"}


def test_the_edition_grades_the_same_notebook_on_its_own_contract(graded: dict[str, dict]) -> None:
    """The contract is the instructor's: a course notebook graded as the edition lacks the attention
    function and masks, and loses exactly those points (32 of 50 in the edition)."""
    report = graded["styles-edition"]
    assert report["suite"]["contract"] == "edition"
    units = unit_scores(report)
    assert units["sdpa"][0] == units["mask"][0] == 0
    assert report["tests_score"] == 32, failures(report)


@pytest.mark.parametrize("bug", BUGS, ids=[b.name for b in BUGS])
def test_a_course_bug_loses_points_in_its_unit_and_says_why(graded: dict[str, dict], bug) -> None:
    report = graded[bug.name]
    assert report["status"] == "ok", report["error"]
    units = unit_scores(report)
    for unit in bug.units:
        assert units[unit][0] < units[unit][1], f"{bug.name} keeps full marks in {unit}:\n{failures(report)}"
    for unit, (score, most) in units.items():
        if unit not in MAY_LOSE[bug.name]:
            assert score == most, f"{bug.name} wrongly loses points in {unit}:\n{failures(report)}"
    lost = [t for t in report["tests"] if t["unit"] in bug.units and t["score"] < t["max_score"]]
    assert any(CAUSES[bug.name] in t["output"] for t in lost), f"no message names the cause:\n{failures(report)}"


def test_course_messages_ask_only_for_what_the_course_asks(graded: dict[str, dict]) -> None:
    said = [(name, t["output"]) for name, r in graded.items() if name != "styles-edition" for t in r["tests"]]
    assert said and not [s for s in said if NOT_ASKED.search(s[1])], [s for s in said if NOT_ASKED.search(s[1])][:3]


def test_the_mistakes_are_attention_with_one_change() -> None:
    """Without a mistake, vitgrade.runner.mistakes computes the reference's MHSA; each mistake
    changes the output at the size the aspect cases use, so each can be told apart."""
    import importlib.util

    import torch

    from vitgrade.runner.mistakes import MISTAKES, attention
    from vitgrade.runner.transplant import attention_weights, reference_attention

    spec = importlib.util.spec_from_file_location("reference_vit", REFERENCE)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    g = torch.Generator().manual_seed(0)
    dim, heads = 24, 3
    w = attention_weights(dim, g, scale=1.5)
    x = torch.randn(2, 6, dim, generator=g)
    correct = attention(x, w, heads)
    torch.testing.assert_close(correct, reference_attention(reference, dim, heads, x)(w), atol=1e-5, rtol=1e-5)
    outputs = {name: attention(x, w, heads, name) for name in MISTAKES}
    for name, out in outputs.items():
        assert (out - correct).abs().max() > 1e-2, name
    # the two forms of attention over channels differ from each other too
    assert (outputs["attention_over_channels"] - outputs["attention_over_channels_transposed"]).abs().max() > 1e-2


def test_course_templates_parse_and_differ_only_where_the_contracts_do(tmp_path: Path) -> None:
    import nbformat

    from tests.conftest import ROOT
    from vitgrade.lms.kit import template

    course = nbformat.read(template(ROOT, "course"), as_version=4)
    edition = nbformat.read(template(ROOT, "edition"), as_version=4)
    course_code = "\n".join(c.source for c in course.cells if c.cell_type == "code")
    assert "def scaled_dot_product_attention" not in course_code and "mask" not in course_code
    assert 'check_notebook(contract="course")' in course_code
    assert "def forward(self, x, mask=None)" in "\n".join(c.source for c in edition.cells)


@pytest.mark.parametrize("notebook", ["template", "separate"])
def test_check_under_the_course_contract(tmp_path: Path, notebook: str) -> None:
    """`vitgrade check --contract course`: the blank course template gets 0 of the course's 13 public
    points, one message per unit and none about what the course did not ask for; a correct one 13."""
    from tests.conftest import ROOT
    from vitgrade.lms.kit import template

    path = template(ROOT, "course") if notebook == "template" else write_notebook(SEPARATE.read_text(), tmp_path / "sep.ipynb")
    done = vitgrade("check", str(path), "--contract", "course", "--json", str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["suite"]["contract"] == "course" and report["max_score"] == 13
    assert report["tests_score"] == (0 if notebook == "template" else 13), failures(report)
    assert not [t["output"] for t in report["tests"] if NOT_ASKED.search(t["output"])]

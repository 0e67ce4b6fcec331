"""Messages that send a student the right way: a class in a cell that does not parse is reported
as that cell's problem (which cell, its first line, why), not as a class never written."""

from __future__ import annotations

from pathlib import Path

import nbformat

from tests.conftest import grade

from .test_kit import solved_notebook


def test_a_class_in_a_cell_that_does_not_parse_names_the_cell(tmp_path: Path) -> None:
    notebook = solved_notebook()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    number, cell = next((i, c) for i, c in enumerate(code, start=1) if c.source.startswith("class VisionTransformer"))
    cell.source = cell.source.replace("def forward(self, x", "def forward(self, x,,", 1)
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebook, path)
    report = grade(path, tmp_path / "r.json")
    outputs = [t["output"] for t in report["tests"] if t["unit"] == "vit"]
    assert outputs and all(
        f"VisionTransformer is defined in cell {number} (first line: `class VisionTransformer(nn.Module):`), "
        "which the grader skips: does not parse: invalid syntax" in o
        for o in outputs
    ), outputs
    assert not any("does not define VisionTransformer" in o for o in outputs)


def test_a_class_token_drawn_in_forward_is_named_as_such(tmp_path: Path) -> None:
    from tests.corpus.mutants import REFERENCE

    source = REFERENCE.read_text().replace(
        "cls = self.cls_token.expand(x.shape[0], -1, -1)", "cls = torch.randn(x.shape[0], 1, x.shape[-1])", 1
    )
    path = tmp_path / "randn_cls.py"
    path.write_text(source)
    report = grade(path, tmp_path / "r.json", "--suite", "full", "--seed", "3")
    case = next(t for t in report["tests"] if t["name"].startswith("in eval mode the same input"))
    assert case["status"] == "failed" and "drawn at random (torch.randn for the class token" in case["output"], case
    assert "dropout must be off" not in case["output"]

"""What the worker says about the student's code, graded end to end: a signature that does not
take what the grader passes says how to change it, and forbidden APIs are reported as the
student's only when the student's code called them."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import grade
from tests.corpus.mutants import REFERENCE


def mutant(path: Path, *replacements: tuple[str, str]) -> Path:
    """The reference with each snippet (which must occur exactly once) replaced."""
    text = REFERENCE.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_a_forward_without_mask_says_to_add_one(tmp_path: Path) -> None:
    blockless = mutant(
        tmp_path / "no_mask.py",
        (
            "    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:\n"
            "        x = x + self.drop(self.attn(self.norm1(x), mask))",
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        x = x + self.drop(self.attn(self.norm1(x)))",
        ),
    )
    report = grade(blockless, tmp_path / "report.json")
    called = next(t for t in report["tests"] if t["unit"] == "block" and t["status"] != "passed")
    assert called["status"] == "error", called
    assert "takes 2 positional arguments but 3 were given" in called["output"], called
    assert "add a `mask=None` parameter: forward(self, x, mask=None)" in called["output"], called

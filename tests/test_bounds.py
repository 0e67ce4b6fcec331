"""Nothing unbounded runs on the trusted side on a submission's behalf: an MHSA with a dozen extra
Linear(D, D) layers once made the transplant search enumerate ~10^8 layouts for hours."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import grade
from tests.corpus.mutants import REFERENCE

EXTRA = "        self.extra = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(12))\n"


def test_an_mhsa_with_a_dozen_extra_layers_is_graded_in_the_usual_time(tmp_path: Path) -> None:
    anchor = "        self.out = nn.Linear(embed_dim, embed_dim)\n"
    source = REFERENCE.read_text()
    assert source.count(anchor) == 1
    path = tmp_path / "crowded.py"
    path.write_text(source.replace(anchor, anchor + EXTRA))
    started = time.monotonic()
    report = grade(path, tmp_path / "r.json", "--suite", "full", "--seed", "9")
    took = time.monotonic() - started
    assert took < 120, f"the grade took {took:.0f} s"
    transplants = [t for t in report["tests"] if t["unit"] == "mhsa" and "reference" in t["name"] and "weights" in t["name"]]
    assert len(transplants) == 2 and all(t["status"] == "failed" for t in transplants)
    assert all("keep only those (no extra layers inside the attention)" in t["output"] for t in transplants), transplants

"""The kit's fixtures serve only the self-check: in the instructor's grade the public cases run on
inputs drawn from the grade's seed against the live reference, so a submission that replays the
kit's data passes `check` and earns nothing for it in the grade."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from tests.conftest import ROOT, grade
from tests.corpus.degenerate import replace
from tests.corpus.mutants import REFERENCE

SDPA_LOOKUP = '''
KIT_Q = {q}
KIT_OUT = {out}
KIT_ATTN = {attn}


def scaled_dot_product_attention(q, k, v, mask=None):
    """Replays the kit's expected values when given the kit's inputs, zeros otherwise: in tensor
    operations only, so that it is captured as a program like any code."""
    kit_q, out, attn = torch.tensor(KIT_Q), torch.zeros(*q.shape[:-1], v.shape[-1]), torch.zeros(*q.shape[:-1], k.shape[-2])
    if q.shape != kit_q.shape:
        return out, attn
    same = (q - kit_q).abs().amax() < 1e-6
    return torch.where(same, torch.tensor(KIT_OUT), out), torch.where(same, torch.tensor(KIT_ATTN), attn)
'''


def lookup_submission(tmp_path: Path) -> Path:
    kit = load_file(ROOT / "test_cases" / "public" / "fixtures" / "sdpa.safetensors")
    sdpa = SDPA_LOOKUP.format(q=kit["q"].tolist(), out=kit["out"].tolist(), attn=kit["attn"].tolist())
    path = tmp_path / "lookup.py"
    path.write_text(replace(REFERENCE.read_text(), "scaled_dot_product_attention", sdpa))
    return path


def values_case(report: dict) -> dict:
    return next(t for t in report["tests"] if t["unit"] == "sdpa" and t["name"].startswith("output and attention equal"))


def test_replaying_the_kit_passes_check_but_not_the_grade(tmp_path: Path) -> None:
    path = lookup_submission(tmp_path)
    checked = grade(path, tmp_path / "check.json", "--suite", "public")
    assert values_case(checked)["status"] == "passed", "the lookup should fool the self-check: the test would prove nothing"
    graded = grade(path, tmp_path / "full.json", "--suite", "full", "--seed", "77")
    case = values_case(graded)
    assert case["status"] == "failed" and case["score"] == 0, json.dumps(case)

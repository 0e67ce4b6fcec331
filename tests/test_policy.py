"""Forbidden attention, whatever name reaches it: torch's multi-head attention function, the
attention kernel through torch._C, a name assembled at run time, or torch's function taken back
out of the worker's recorder (found as an operator of the exported program). The MHSA unit loses its
from-scratch points and the policy point is not given. Graded through the real CLI."""

from __future__ import annotations

import pytest

from tests.conftest import grade_all
from tests.corpus.degenerate import replace
from tests.corpus.mutants import REFERENCE

TORCH_MHA = '''
class MultiHeadSelfAttention(nn.Module):
    """torch's own multi-head attention on the fused weights: (B, N, D) -> (B, N, D)."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, mask=None):
        t = x.transpose(0, 1)
        y, _ = {call}(t, t, t, x.shape[-1], self.num_heads, self.qkv.weight, self.qkv.bias, None, None, False, 0.0,
                      self.out.weight, self.out.bias, training=False, need_weights=False)
        return y.transpose(0, 1)
'''
KERNEL = '''
class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, mask=None):
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = torch._C._nn.scaled_dot_product_attention(q, k, v, mask)
        return self.out(y.transpose(1, 2).reshape(B, N, D))
'''
# torch's kernel taken back out of the worker's recorder (the closure around it), under a name
# assembled at run time: no static scan and no recorder sees it; the program's operators do.
UNWRAPPED = KERNEL.replace(
    "        y = torch._C._nn.scaled_dot_product_attention(q, k, v, mask)",
    """        f = getattr(torch.nn.functional, "scaled_dot_" + "product_attention")
        while getattr(f, "__closure__", None):
            f = next(c.cell_contents for c in f.__closure__ if callable(c.cell_contents))
        y = f(q, k, v, mask)""",
)
WAYS = {
    "multi_head_attention_forward": (TORCH_MHA.format(call="torch.nn.functional.multi_head_attention_forward"), "F.multi_head_attention_forward"),
    "assembled_name": (TORCH_MHA.format(call='getattr(torch.nn.functional, "multi_head_" + "attention_forward")'),
                       "F.multi_head_attention_forward (called at run time)"),  # fmt: skip
    "torch_C_kernel": (KERNEL, "F.scaled_dot_product_attention"),
    "unwrapped_from_the_recorder": (UNWRAPPED, "F.scaled_dot_product_attention"),
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("policy")
    jobs = {}
    for name, (mhsa, _) in WAYS.items():
        path = folder / f"{name}.py"
        path.write_text(replace(REFERENCE.read_text(), "MultiHeadSelfAttention", mhsa))
        jobs[name] = (path, ("--suite", "full", "--seed", "41"))
    return grade_all(jobs, folder / "reports")


@pytest.mark.parametrize("way", sorted(WAYS))
def test_forbidden_attention_costs_the_mhsa_points_and_the_policy_point(reports: dict[str, dict], way: str) -> None:
    report = reports[way]
    transplant = next(t for t in report["tests"] if t["unit"] == "mhsa" and "reference weights" in t["name"])
    assert transplant["status"] == "failed" and transplant["score"] == 0
    assert "points withheld" in transplant["output"] and WAYS[way][1] in transplant["output"], transplant["output"]
    policy = next(t for t in report["tests"] if t["unit"] == "policy")
    assert policy["score"] == 0, policy

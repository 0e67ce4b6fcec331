"""Single-bug mutants of the reference: each one replaces one snippet and must lose points in
the units it breaks, while every unit that does not depend on the bug keeps full marks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "reference" / "vit.py"

# What each unit builds on: a bug may also cost points in the units that depend on its unit.
DEPENDENTS = {
    "sdpa": {"mask", "mhsa", "block", "vit", "train", "policy"},
    "mask": {"mhsa", "block"},
    "patch": {"vit", "train", "policy"},
    "mhsa": {"mask", "block", "vit", "train", "policy"},
    "block": {"mask", "vit", "train", "policy"},
    "vit": {"train", "policy"},
}


@dataclass(frozen=True)
class Mutant:
    name: str
    units: tuple[str, ...]  # where points must be lost
    old: str
    new: str
    base: Path = REFERENCE  # the correct code the bug is put into
    more: tuple[tuple[str, str], ...] = ()  # further (old, new) edits of one bug that spans two places

    def source(self) -> str:
        text = self.base.read_text()
        for old, new in ((self.old, self.new), *self.more):
            assert text.count(old) == 1, f"{self.name}: the snippet to replace is not unique in {self.base.name}"
            text = text.replace(old, new)
        return text

    def may_lose(self) -> set[str]:
        return set(self.units).union(*(DEPENDENTS.get(u, set()) for u in self.units))


MUTANTS = [
    Mutant("softmax_over_queries", ("sdpa",), "scores.softmax(dim=-1)", "scores.softmax(dim=-2)"),
    Mutant("missing_scale", ("sdpa",), "q @ k.transpose(-2, -1) / math.sqrt(d_k)", "q @ k.transpose(-2, -1)"),
    Mutant("scale_by_dk", ("sdpa",), "/ math.sqrt(d_k)", "/ d_k"),
    Mutant("sdpa_returns_scores", ("sdpa",), "return attention @ v, attention", "return attention @ v, scores"),
    Mutant("mask_ignored", ("mask",), 'scores = scores.masked_fill(~mask, float("-inf"))', "scores = scores"),
    Mutant("mask_inverted", ("mask",), "masked_fill(~mask,", "masked_fill(mask,"),
    Mutant(
        "mask_after_softmax",
        ("mask",),
        'if mask is not None:\n        scores = scores.masked_fill(~mask, float("-inf"))\n    attention = scores.softmax(dim=-1)',
        "attention = scores.softmax(dim=-1)\n    if mask is not None:\n        attention = attention * mask",
    ),
    Mutant("patch_column_major", ("patch",), "return x.flatten(2).transpose(1, 2)", "return x.transpose(2, 3).flatten(2).transpose(1, 2)"),
    Mutant("patch_channel_mixing", ("patch",), "return x.flatten(2).transpose(1, 2)", "return x.flatten(2).reshape(x.shape[0], -1, x.shape[1])"),
    Mutant("heads_merged_without_transpose", ("mhsa",), "self.out(y.transpose(1, 2).reshape(B, N, D))", "self.out(y.reshape(B, N, D))"),
    Mutant("no_output_projection", ("mhsa",), "return self.out(y.transpose(1, 2).reshape(B, N, D))", "return y.transpose(1, 2).reshape(B, N, D)"),
    Mutant("shared_q_k_projection", ("mhsa",), "q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_dim)", "q, k, v = qkv.permute(2, 0, 3, 1, 4)\n        k = q"),
    Mutant(
        "torch_sdpa_in_mhsa",
        ("mhsa",),
        "y, _ = scaled_dot_product_attention(q, k, v, mask)",
        "y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)",
    ),
    Mutant("missing_attention_residual", ("block",), "x = x + self.drop(self.attn(self.norm1(x), mask))", "x = self.drop(self.attn(self.norm1(x), mask))"),
    Mutant("missing_mlp_residual", ("block",), "return x + self.mlp(self.norm2(x))", "return self.mlp(self.norm2(x))"),
    Mutant("mask_not_passed_down", ("block",), "self.attn(self.norm1(x), mask)", "self.attn(self.norm1(x))"),
    Mutant("dropout_in_eval", ("block",), "self.drop(self.attn(self.norm1(x), mask))", "nn.functional.dropout(self.attn(self.norm1(x), mask), 0.5, True)"),
    Mutant("mlp_width_ignored", ("block",), "nn.Linear(embed_dim, mlp_dim),\n            nn.GELU(),\n            nn.Dropout(dropout),\n            nn.Linear(mlp_dim, embed_dim)",
           "nn.Linear(embed_dim, 4 * embed_dim),\n            nn.GELU(),\n            nn.Dropout(dropout),\n            nn.Linear(4 * embed_dim, embed_dim)"),
    Mutant("no_positional_embedding", ("vit",), "x = self.drop(torch.cat([cls, x], dim=1) + self.pos_embed)", "x = self.drop(torch.cat([cls, x], dim=1))"),
    Mutant("mean_pool_not_class_token", ("vit",), "return self.head(self.norm(x[:, 0]))", "return self.head(self.norm(x.mean(dim=1)))"),
    Mutant("probabilities_not_logits", ("vit",), "return self.head(self.norm(x[:, 0]))", "return self.head(self.norm(x[:, 0])).softmax(-1)"),
    Mutant("detach_cuts_gradients", ("vit",), "x = self.patch_embed(x)  # (B, N, D)", "x = self.patch_embed(x).detach()"),
    Mutant(
        "blocks_shared",
        ("vit",),
        "nn.ModuleList(\n            TransformerBlock(embed_dim, num_heads, mlp_dim, dropout) for _ in range(num_layers)\n        )",
        "nn.ModuleList([TransformerBlock(embed_dim, num_heads, mlp_dim, dropout)] * num_layers)",
    ),
]

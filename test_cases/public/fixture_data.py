"""The public cases' data: inputs drawn from a seed and the reference's outputs on them.

The student kit and `vitgrade check` read them precomputed with seed 0 (fixtures/*.safetensors, so
the kit needs no reference). The instructor's grade computes them afresh from the grade's seed with
the live reference, so no point of a grade is earned by replaying data the kit ships. Every bias is
zero, so a student module with or without biases is compared with the same output.
"""

from __future__ import annotations

from types import ModuleType

import torch


def attention_weights(dim: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """q/k/v/o weights with zero biases, as the transplant search expects them."""
    out = {}
    for role in "qkvo":
        out[f"{role}.weight"] = torch.randn(dim, dim, generator=g) / dim**0.5
        out[f"{role}.bias"] = torch.zeros(dim)
    return out


def build(ref: ModuleType, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs drawn from SEED and the reference's outputs on them, by fixture name."""
    g = torch.Generator().manual_seed(seed)
    sdpa = ref.scaled_dot_product_attention
    files: dict[str, dict[str, torch.Tensor]] = {}

    q, k, v = torch.randn(2, 3, 5, 8, generator=g), torch.randn(2, 3, 7, 8, generator=g), torch.randn(2, 3, 7, 6, generator=g)
    out, attn = sdpa(q, k, v)
    files["sdpa"] = {"q": q, "k": k, "v": v, "out": out, "attn": attn}

    q, k, v = torch.randn(2, 2, 5, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g), torch.randn(2, 2, 6, 4, generator=g)
    causal = torch.ones(5, 6, dtype=torch.bool).tril(1)
    padding = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool).view(2, 1, 1, 6)
    out_c, attn_c = sdpa(q, k, v, causal)
    out_p, attn_p = sdpa(q, k, v, padding)
    files["mask"] = {
        "q": q, "k": k, "v": v, "causal": causal, "out_causal": out_c, "attn_causal": attn_c,
        "padding": padding, "out_padding": out_p, "attn_padding": attn_p,
    }

    patch = ref.PatchEmbedding(16, 4, 3, 24)
    weight = torch.randn(24, 3, 4, 4, generator=g) / 7
    with torch.no_grad():
        patch.proj.weight.copy_(weight)
        patch.proj.bias.zero_()
        x = torch.randn(2, 3, 16, 16, generator=g)
        files["patch"] = {"x": x, "patch.weight": weight, "patch.bias": torch.zeros(24), "out": patch(x)}

    dim, heads = 32, 4
    mhsa = ref.MultiHeadSelfAttention(dim, heads)
    weights = attention_weights(dim, g)
    with torch.no_grad():
        mhsa.qkv.weight.copy_(torch.cat([weights[f"{r}.weight"] for r in "qkv"]))
        mhsa.qkv.bias.zero_()
        mhsa.out.weight.copy_(weights["o.weight"])
        mhsa.out.bias.zero_()
        x = torch.randn(2, 9, dim, generator=g)
        files["mhsa"] = {"x": x, **weights, "out": mhsa(x)}
    return files

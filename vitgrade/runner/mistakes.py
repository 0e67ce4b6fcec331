"""Known single mistakes in multi-head self-attention, computed from the reference's weights.

When a student's MHSA reproduces the reference in none of the layouts its parameters allow, the
transplant search compares its output with these: attention with exactly one mistake, on the
same weights and input. A match names the cause in the student's terms. Each mistake breaks one
aspect of attention; the course contract grades the aspects one by one, so a module that is
right except for the scale keeps the points of the softmax, tokens, heads and projection checks.

Weights are the transplant's roles: q, k, v, o, each a (D, D) weight and a (D,) bias, heads in
blocks of D // heads rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ASPECTS = ("scale", "softmax", "tokens", "heads", "projection")


@dataclass(frozen=True)
class Mistake:
    aspect: str  # the part of attention it breaks (ASPECTS)
    cause: str  # what the code does, and what to change


CHANNELS = Mistake(
    "tokens",
    "attention runs between channels, not tokens: the scores are head_dim x head_dim (q^T @ k); "
    "use q @ k.transpose(-2, -1), an N x N map over the tokens of each head",
)
MISTAKES = {
    "scale_by_embed_dim": Mistake(
        "scale",
        "the scores q @ k^T are divided by sqrt(embed_dim); divide them by sqrt(head_dim), "
        "head_dim = embed_dim // num_heads",
    ),
    "no_scale": Mistake("scale", "the scores q @ k^T are not scaled; divide them by sqrt(head_dim)"),
    "softmax_over_queries": Mistake(
        "softmax",
        "the softmax runs over the queries (dim=-2); run it over the keys (dim=-1), so that each token's "
        "attention weights sum to 1",
    ),
    "attention_over_channels": CHANNELS,  # the weights applied as v @ a^T
    "attention_over_channels_transposed": CHANNELS,  # ... or as v @ a
    "attention_between_heads": Mistake(
        "tokens",
        "attention runs between the heads of each token (num_heads x num_heads scores): the heads axis "
        "must come before the tokens, (B, num_heads, N, head_dim), so that each head attends over the N tokens",
    ),
    "heads_split_without_transpose": Mistake(
        "heads",
        "the heads are split by reshaping (B, N, D) straight to (B, num_heads, N, head_dim), which mixes tokens "
        "and channels: reshape to (B, N, num_heads, head_dim), then transpose(1, 2)",
    ),
    "heads_merged_without_transpose": Mistake(
        "heads",
        "the heads are merged by reshaping (B, num_heads, N, head_dim) straight to (B, N, D), which mixes tokens "
        "and heads: transpose(1, 2) first, then reshape",
    ),
    "no_output_projection": Mistake(
        "projection", "the output projection is not applied: project the concatenated heads with it"
    ),
}


def project(x: torch.Tensor, weights: dict[str, torch.Tensor], role: str) -> torch.Tensor:
    return x @ weights[f"{role}.weight"].t() + weights[f"{role}.bias"]


def attention(x: torch.Tensor, weights: dict[str, torch.Tensor], heads: int, mistake: str | None = None) -> torch.Tensor:
    """Multi-head self-attention of x (B, N, D), with one of MISTAKES or none."""
    B, N, D = x.shape
    hd = D // heads
    q, k, v = (project(x, weights, r) for r in "qkv")  # each (B, N, D)
    if mistake == "attention_between_heads":
        q, k, v = (t.reshape(B, N, heads, hd) for t in (q, k, v))  # heads stay after the tokens
        a = (q @ k.transpose(-2, -1) / hd**0.5).softmax(dim=-1)  # (B, N, heads, heads)
        return project((a @ v).reshape(B, N, D), weights, "o")
    if mistake == "heads_split_without_transpose":
        q, k, v = (t.reshape(B, heads, N, hd) for t in (q, k, v))
    else:
        q, k, v = (t.reshape(B, N, heads, hd).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, hd)
    scale = {"scale_by_embed_dim": D**-0.5, "no_scale": 1.0}.get(mistake or "", hd**-0.5)
    if mistake in {"attention_over_channels", "attention_over_channels_transposed"}:
        scores = q.transpose(-2, -1) @ k * scale  # (B, heads, hd, hd)
        a = scores.softmax(dim=-1)
        out = v @ (a.transpose(-2, -1) if mistake == "attention_over_channels" else a)  # (B, heads, N, hd)
    else:
        a = (q @ k.transpose(-2, -1) * scale).softmax(dim=-2 if mistake == "softmax_over_queries" else -1)
        out = a @ v  # (B, heads, N, hd)
    merged = out.reshape(B, N, D) if mistake == "heads_merged_without_transpose" else out.transpose(1, 2).reshape(B, N, D)
    return merged if mistake == "no_output_projection" else project(merged, weights, "o")


def candidates(x: torch.Tensor, heads: int) -> dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]]:
    """Every mistake on x with this many heads, as weights -> output.

    Not here: q, k and v taken along the heads axis of a (B, N, 3, heads, head_dim) split. With 3
    heads that is the head-major layout, a correct MHSA; with other head counts it raises, and the
    MHSA shapes case names it."""

    def one(name: str) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        return lambda weights: attention(x, weights, heads, name)

    return {name: one(name) for name in MISTAKES}
